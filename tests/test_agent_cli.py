"""``sidecar agent`` as a child process against a real Forward receiver: delivery, failures, restarts.

Each test writes numbered lines (``tests.writer``), lets the sidecar ship them to
:class:`~tests.forward_receiver.ForwardReceiver`, and checks what the receiver got as if it were stream
mode's stdout: the ``log`` field of every event, in arrival order, one per line.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checker import assert_exactly_once, check, parse
from tests.conftest import (
    SidecarFactory,
    SidecarProcess,
    read_state,
    state_entry,
    unconfirmed_lines,
    wait_for_checkpoint,
)
from tests.forward_receiver import ForwardReceiver, Message, as_bytes, make_tls_files
from tests.writer import BackgroundWriter, LogWriter

FAST = ("--flush-interval", "0.1s", "--ack-timeout", "2s")


@pytest.fixture
def receiver() -> Iterator[ForwardReceiver]:
    with ForwardReceiver() as running:
        yield running


def shipped(*receivers: ForwardReceiver) -> bytes:
    """The lines the receivers got, as stream mode would have printed them."""
    return b"".join(as_bytes(e.record["log"]) + b"\n" for r in receivers for e in r.events())


def lines_of(messages: list[Message]) -> bytes:
    """:func:`shipped` for some of the messages only."""
    return b"".join(as_bytes(record["log"]) + b"\n" for m in messages for _, record in m.entries)


def agent(
    sidecar: SidecarFactory,
    log_dir: Path,
    *receivers: ForwardReceiver,
    args: tuple[str, ...] = (),
    ready: bool = True,
) -> SidecarProcess:
    first, *more = receivers
    forward = [item for r in more for item in ("--forward", f"127.0.0.1:{r.port}")]
    return sidecar(
        str(log_dir / "*.log"),
        "--fluentd-host",
        "127.0.0.1",
        "--fluentd-port",
        str(first.port),
        *forward,
        *FAST,
        *args,
        mode="agent",
        ready=ready,
    )


def wait_shipped(receiver: ForwardReceiver, writer: LogWriter, *others: ForwardReceiver) -> None:
    """Wait until every line ``writer`` wrote has reached one of the receivers."""
    wanted = set(writer.written)

    def arrived(_: object) -> bool:
        counts, _, _ = parse(shipped(receiver, *others), [writer.stream])
        return wanted <= {seq for _, seq in counts}

    receiver.wait_until(arrived, timeout=15)


def duplicates(output: bytes, stream: str) -> int:
    counts, _, _ = parse(output, [stream])
    return sum(count - 1 for count in counts.values())


def test_every_line_is_delivered_with_acks_and_the_checkpoint_follows_the_acks(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path
) -> None:
    """The receiver holds its acks (its loop waits before answering): received is not acknowledged. The
    first 400 lines make one chunk, so that a commit on write would have nothing else to wait for."""
    acks_released = threading.Event()

    def hold_ack(_: Message) -> None:
        acks_released.wait(30)

    with ForwardReceiver(on_message=hold_ack) as receiver:
        writer = LogWriter(log_dir / "app.log")
        writer.write(400)
        try:
            # No resend while the acks are held: exactly once is then the only right answer.
            proc = agent(sidecar, log_dir, receiver, args=("--chunk-records", "500", "--ack-timeout", "60s"))
            receiver.wait_until(lambda r: len(r.messages) >= 1)
            wait_for_checkpoint(checkpoint_dir, writer.path, 0)
            time.sleep(1.0)  # five checkpoint intervals: a commit on write would have reached the state file
            assert state_entry(checkpoint_dir, writer.path)["offset"] == 0
        finally:
            acks_released.set()
        wait_shipped(receiver, writer)
        wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
        writer.write(3000)
        writer.write(200, batch=False)
        wait_shipped(receiver, writer)
        wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
        assert proc.stop() == 0
    assert_exactly_once(shipped(receiver), {"app": writer.written})
    assert all(m.option and m.option.get("chunk") for m in receiver.messages)
    event = receiver.events()[0]
    assert event.tag == "sidecar.app"
    assert event.record["file"] == str(writer.path)
    assert max(len(m.entries) for m in receiver.messages) <= 500


def test_without_acks_chunks_go_out_compressed_and_are_committed_on_write(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path, receiver: ForwardReceiver
) -> None:
    receiver.ack_mode = "never"  # would stall an at-least-once sender
    writer = LogWriter(log_dir / "app.log")
    writer.write(1000)
    proc = agent(sidecar, log_dir, receiver, args=("--require-ack", "false", "--compress", "gzip"))
    wait_shipped(receiver, writer)
    wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
    assert proc.stop() == 0
    assert {m.mode for m in receiver.messages} == {"CompressedPackedForward"}
    assert not any(m.option and "chunk" in m.option for m in receiver.messages)
    assert check(shipped(receiver), {"app": writer.written}).ok


def test_receiver_killed_and_restarted_while_the_file_rotates_loses_nothing(
    sidecar: SidecarFactory, log_dir: Path, receiver: ForwardReceiver
) -> None:
    chunk, window = 50, 4
    writer = LogWriter(log_dir / "app.log")
    background = BackgroundWriter(writer, interval=0.001, per_write=5)
    background.start()
    proc = agent(sidecar, log_dir, receiver, args=("--chunk-records", str(chunk), "--max-in-flight", str(window)))
    receiver.wait_until(lambda r: len(r.events()) >= 500)
    receiver.stop()  # mid-stream: chunks are in flight
    background.wait_written(len(writer.written) + 1000)
    (log_dir / "app.log").rename(log_dir / "app.log.1")  # logrotate while the receiver is down
    background.reopen()
    background.wait_written(len(writer.written) + 1000)
    receiver.start()
    background.wait_written(len(writer.written) + 1000)
    written = background.stop()
    wait_shipped(receiver, writer)
    assert proc.stop() == 0
    output = shipped(receiver)
    # Resent chunks arrive after newer ones: agent mode promises no order, the ledger keeps the checkpoint right.
    assert_exactly_once(output, {"app": written}, may_duplicate={"app": written}, ordered=False)
    assert duplicates(output, "app") <= chunk * window


def test_receiver_that_never_acks_gets_the_chunks_again_and_nothing_is_committed(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path, receiver: ForwardReceiver
) -> None:
    receiver.ack_mode = "never"
    writer = LogWriter(log_dir / "app.log")
    writer.write(100)
    proc = agent(sidecar, log_dir, receiver, args=("--ack-timeout", "0.3s"))
    receiver.wait_until(lambda r: len(r.messages) >= 3)  # the same chunk, resent after each timeout
    assert len({m.option["chunk"] for m in receiver.messages if m.option}) == 1
    proc.wait_stderr("receiver_down")
    wait_for_checkpoint(checkpoint_dir, writer.path, 0)
    assert state_entry(checkpoint_dir, writer.path)["offset"] == 0
    receiver.ack_mode = "ack"
    wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
    assert proc.stop() == 0
    resent = {"app": writer.written}
    assert_exactly_once(shipped(receiver), {"app": writer.written}, may_duplicate=resent, ordered=False)


def test_garbage_reply_breaks_the_connection_and_the_chunk_is_resent(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path
) -> None:
    """Only the first message is answered with garbage; every later one is acknowledged."""
    seen: list[Message] = []

    def answer(message: Message) -> None:  # runs before the receiver replies to ``message``
        seen.append(message)
        garbler.ack_mode = "garbage" if len(seen) == 1 else "ack"

    with ForwardReceiver(on_message=answer) as garbler:
        writer = LogWriter(log_dir / "app.log")
        writer.write(50)
        proc = agent(sidecar, log_dir, garbler)
        err = proc.wait_stderr("receiver_down")
        assert f"receiver=127.0.0.1:{garbler.port}" in err
        wait_shipped(garbler, writer)
        wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
        writer.write(50)
        wait_shipped(garbler, writer)
        wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
        assert proc.stop() == 0
    first, *acked = garbler.messages
    assert first.option is not None
    assert acked[0].option == first.option, "the chunk answered with garbage is resent, with the same id"
    assert acked[0].entries == first.entries
    assert garbler.connections >= 2
    assert_exactly_once(lines_of(acked), {"app": writer.written})


def test_wrong_shared_key_is_logged_naming_the_receiver(sidecar: SidecarFactory, log_dir: Path) -> None:
    with ForwardReceiver(shared_key="right") as receiver:
        LogWriter(log_dir / "app.log").write(5)
        proc = agent(sidecar, log_dir, receiver, args=("--shared-key", "wrong"))
        err = proc.wait_stderr("receiver_down")
        line = next(line for line in err.splitlines() if "receiver_down" in line)
        assert f"receiver=127.0.0.1:{receiver.port}" in line
        assert "shared_key mismatch" in line
        assert receiver.events() == []
        assert proc.stop() == 0


def test_shared_key_and_tls_with_a_private_ca(sidecar: SidecarFactory, log_dir: Path, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with ForwardReceiver(shared_key="s3cr3t", tls=tls.server_context()) as receiver:
        writer = LogWriter(log_dir / "app.log")
        writer.write(300)
        args = ("--tls", "--tls-ca", tls.ca, "--shared-key", "s3cr3t", "--self-hostname", "edge")
        proc = agent(sidecar, log_dir, receiver, args=args)
        wait_shipped(receiver, writer)
        assert proc.stop() == 0
        assert [p.hostname for p in receiver.pings][:1] == ["edge"]
        assert check(shipped(receiver), {"app": writer.written}).ok


def test_tls_without_the_ca_is_refused_and_nothing_is_shipped(
    sidecar: SidecarFactory, log_dir: Path, tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path)
    with ForwardReceiver(tls=tls.server_context()) as receiver:
        LogWriter(log_dir / "app.log").write(5)
        proc = agent(sidecar, log_dir, receiver, args=("--tls",))
        assert "CERTIFICATE_VERIFY_FAILED" in proc.wait_stderr("receiver_down").upper().replace(" ", "_")
        assert receiver.events() == []
        assert proc.stop() == 0


def test_failover_to_the_second_receiver_and_back(sidecar: SidecarFactory, log_dir: Path) -> None:
    with ForwardReceiver() as primary, ForwardReceiver() as backup:
        primary.stop()
        writer = LogWriter(log_dir / "app.log")
        writer.write(200)
        proc = agent(sidecar, log_dir, primary, backup)
        wait_shipped(backup, writer)
        primary.start()
        deadline = time.monotonic() + 15
        while not primary.events():  # a chunk sent to the backup lets the pool probe the primary again
            assert time.monotonic() < deadline, "traffic never returned to the primary receiver"
            writer.write(10)
            time.sleep(0.2)
        wait_shipped(primary, writer, backup)
        assert proc.stop() == 0
        output = shipped(backup, primary)
        assert_exactly_once(output, {"app": writer.written}, may_duplicate={"app": writer.written}, ordered=False)


def test_sigkill_and_restart_loses_nothing(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path, receiver: ForwardReceiver
) -> None:
    chunk, window = 100, 4
    writer = LogWriter(log_dir / "app.log")
    background = BackgroundWriter(writer, interval=0.001, per_write=5)
    background.start()
    proc = agent(sidecar, log_dir, receiver, args=("--chunk-records", str(chunk), "--max-in-flight", str(window)))
    background.wait_written(1500)
    wait_for_checkpoint(checkpoint_dir, writer.path, 1)
    proc.kill()
    # unacknowledged chunks and what was acked since the last checkpoint: past the state file's offset
    unconfirmed = unconfirmed_lines(checkpoint_dir, [writer.path], "app")
    background.wait_written(2500)
    proc.start()
    background.wait_written(3500)
    written = background.stop()
    wait_shipped(receiver, writer)
    assert proc.stop() == 0
    output = shipped(receiver)
    assert_exactly_once(output, {"app": written}, may_duplicate={"app": unconfirmed}, ordered=False)
    assert duplicates(output, "app") <= chunk * window + 1000


def test_three_sigkills_while_shipping_with_rotations_in_between_lose_nothing(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path, receiver: ForwardReceiver
) -> None:
    """The field notes' case where Fluent Bit lost 40 %: each rotated generation is in the checkpoint by
    identity and is finished after the restart."""
    writer = LogWriter(log_dir / "app.log")
    background = BackgroundWriter(writer, interval=0.001, per_write=5)
    background.start()
    proc = agent(sidecar, log_dir, receiver, args=("--chunk-records", "100"))
    repeatable: set[int] = set()
    for generation in range(1, 4):
        background.wait_written(1000 * generation)
        wait_for_checkpoint(checkpoint_dir, writer.path, 1)
        proc.kill()
        # What the restart may ship again: only lines past the offsets the state file holds at the kill.
        repeatable |= unconfirmed_lines(checkpoint_dir, log_dir.glob("app.log*"), "app")
        (log_dir / "app.log").rename(log_dir / f"app.log.{generation}")
        background.wait_written(1000 * generation + 100)  # late lines into the renamed file
        background.reopen()
        background.wait_written(1000 * generation + 300)
        proc.start()
    written = background.stop()
    wait_shipped(receiver, writer)
    assert proc.stop() == 0
    # Agent mode promises no order; the count of repeats is bounded by what was unconfirmed at each kill.
    assert_exactly_once(shipped(receiver), {"app": written}, may_duplicate={"app": repeatable}, ordered=False)


def test_run_with_sidecar_mode_agent_takes_every_option_from_the_environment(
    tmp_path: Path,
    log_dir: Path,
    checkpoint_dir: Path,
    receiver: ForwardReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = LogWriter(log_dir / "web.log")
    writer.write(20)
    with ForwardReceiver() as backup:
        backup.stop()  # down: the second receiver in SIDECAR_FORWARD takes the lines
        env = {
            "SIDECAR_MODE": "agent",
            "SIDECAR_PATHS": str(log_dir / "*.log"),
            "SIDECAR_CHECKPOINT_DIR": str(checkpoint_dir),
            "SIDECAR_METRICS_PORT": "0",
            "SIDECAR_FORWARD": f"127.0.0.1:{backup.port}, 127.0.0.1:{receiver.port}",
            "SIDECAR_TAG": "kube.{namespace}.{pod}.{file_stem}",
            "SIDECAR_FIELD": "cluster=eu,team=shop",
            "SIDECAR_FLUSH_INTERVAL": "0.1s",
            "POD_NAME": "shop-7d9f",
            "POD_NAMESPACE": "prod",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        proc = SidecarProcess(tmp_path / "run", [], mode="run").start()
        try:
            wait_shipped(receiver, writer)
            assert proc.stop() == 0
        finally:
            proc.cleanup()
    event = receiver.events()[0]
    assert event.tag == "kube.prod.shop-7d9f.web"
    assert {k: event.record[k] for k in ("pod", "namespace", "cluster", "team")} == {
        "pod": "shop-7d9f",
        "namespace": "prod",
        "cluster": "eu",
        "team": "shop",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tag", "app.{bogus}"), "--tag 'app.{bogus}': unknown placeholder {bogus}"),
        (("--parser", "regex"), "--parser regex needs --regex"),
        (("--tls-ca", "/nonexistent.pem"), "--tls-ca is set but --tls is off"),
        (("--field", "nokey"), "--field 'nokey'"),
    ],
)
def test_bad_option_is_one_line_on_stderr_and_exit_code_2(
    sidecar: SidecarFactory, log_dir: Path, receiver: ForwardReceiver, args: tuple[str, ...], message: str
) -> None:
    proc = agent(sidecar, log_dir, receiver, args=args, ready=False)
    assert proc.wait() == 2
    err = proc.runs[-1].stderr_path.read_text()
    assert err.strip().splitlines() == [f"sidecar: {err.strip().removeprefix('sidecar: ')}"]
    assert message in err


def test_sigterm_ships_the_open_chunk_before_exiting(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path, receiver: ForwardReceiver
) -> None:
    writer = LogWriter(log_dir / "app.log")
    proc = agent(sidecar, log_dir, receiver, args=("--flush-interval", "1h"))
    writer.write(10)
    wait_for_checkpoint(checkpoint_dir, writer.path, 0)
    assert proc.stop(signal.SIGTERM) == 0
    assert check(shipped(receiver), {"app": writer.written}).ok
    assert Counter(e["offset"] for e in read_state(checkpoint_dir)) == {writer.path.stat().st_size: 1}

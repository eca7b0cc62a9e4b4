"""``sidecar agent`` through its CLI into one real receiver, counting what the receiver wrote out.

Each scenario writes numbered lines (``<tag> <seq> <filler>``) into a log file, runs the sidecar on it
with the scenario's options against a receiver configured to match, waits until every line arrived (or
nothing more arrives for a while), stops both, and counts the distinct lines the receiver kept. A
scenario marked ``receiver_limit`` sends chunks a receiver is known to mishandle (Fluent Bit's gzip
pieces): it is measured and reported, not held against the sidecar.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from interop.receivers import InteropError, Receiver, Settings, Tls
from sidecar.modes.agent.sink import FLUENT_BIT_PIECE

_QUIET = 6.0
_DELIVERY_TIMEOUT = 180.0
_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the secure scenario uses on both ends."""

    ca: Path
    tls: Tls
    shared_key: str = "interop-shared-key"
    user: str = "sidecar"
    password: str = "interop-password"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One run of the sidecar against one receiver."""

    name: str
    what: str
    args: tuple[str, ...] = ()
    settings: Settings = field(default_factory=Settings)
    secure: bool = False
    lines: int = 60_000
    line_bytes: int = 100
    big_line: int = 0
    restart: bool = False
    receiver_limit: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one scenario delivered to one receiver."""

    receiver: str
    scenario: Scenario
    sent: int
    received: int
    duplicates: int
    seconds: float

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def verdict(self) -> str:
        if self.lost == 0:
            return "ok"
        return "receiver limit" if self.receiver in self.scenario.receiver_limit else "LOST"


SCENARIOS = (
    Scenario("packed-ack", "PackedForward, acks, default chunks (2MiB)"),
    Scenario("packed-noack", "PackedForward, --require-ack false", ("--require-ack", "false")),
    Scenario("gzip-ack", "CompressedPackedForward, acks, default chunks (768KiB)", ("--compress", "gzip")),
    Scenario(
        "gzip-noack", "CompressedPackedForward, --require-ack false", ("--compress", "gzip", "--require-ack", "false")
    ),
    Scenario("secure", "gzip, acks, TLS (CA verified), shared key, user auth", ("--compress", "gzip"), secure=True),
    Scenario(
        "gzip-at-piece",
        f"gzip, --chunk-bytes {FLUENT_BIT_PIECE} (= Fluent Bit's default Buffer_Chunk_Size)",
        ("--compress", "gzip", "--chunk-bytes", str(FLUENT_BIT_PIECE)),
    ),
    Scenario(
        "gzip-2MiB",
        "gzip, --chunk-bytes 2MiB (the old default) into the default Buffer_Chunk_Size",
        ("--compress", "gzip", "--chunk-bytes", "2MiB"),
        receiver_limit=frozenset({"fluent-bit"}),
    ),
    Scenario(
        "gzip-4MiB-raised",
        "gzip, --chunk-bytes 4MiB into Buffer_Chunk_Size 8M (the documented way to raise it)",
        ("--compress", "gzip", "--chunk-bytes", "4MiB", "--chunk-records", "100000"),
        Settings(buffer_chunk_size=8_000_000, buffer_max_size=16_000_000),
    ),
    Scenario(
        "packed-4MiB",
        "PackedForward, --chunk-bytes 4MiB (under Fluent Bit's default Buffer_Max_Size 6,144,000)",
        ("--chunk-bytes", "4MiB", "--chunk-records", "100000"),
    ),
    Scenario(
        "gzip-oversized-line",
        "gzip, one 900,000-byte line among small ones (over --chunk-bytes: sent alone, uncompressed)",
        ("--compress", "gzip"),
        lines=20_000,
        big_line=900_000,
    ),
    Scenario(
        "gzip-receiver-restart",
        "gzip, acks, the receiver stopped and started again while lines keep coming",
        ("--compress", "gzip"),
        restart=True,
    ),
)


def line(tag: str, seq: int, size: int) -> bytes:
    """Line ``seq`` of ``tag``, ``size`` bytes long without its newline."""
    head = b"%s %08d " % (tag.encode(), seq)
    return head + b"x" * max(0, size - len(head))


class _Writer(threading.Thread):
    """Appends the scenario's lines to the log file, all at once or paced over a few seconds."""

    def __init__(self, path: Path, tag: str, scenario: Scenario, per_second: float | None) -> None:
        super().__init__(name=f"writer-{tag}", daemon=True)
        self._path, self._tag, self._scenario, self._per_second = path, tag, scenario, per_second

    def run(self) -> None:
        scenario = self._scenario
        batch = 1000
        with self._path.open("ab") as out:
            for start in range(0, scenario.lines, batch):
                seqs = range(start, min(start + batch, scenario.lines))
                out.write(b"".join(line(self._tag, seq, self._size(seq)) + b"\n" for seq in seqs))
                out.flush()
                if self._per_second:
                    time.sleep(batch / self._per_second)


    def _size(self, seq: int) -> int:
        scenario = self._scenario
        return scenario.big_line if scenario.big_line and seq == scenario.lines // 2 else scenario.line_bytes


def _count(receiver: Receiver, tag: str) -> Counter[int]:
    counts: Counter[int] = Counter()
    for record in receiver.records(tag):
        text = record.get("log")
        if isinstance(text, str) and text.startswith(tag + " "):
            counts[int(text.split(" ", 2)[1])] += 1
    return counts


def _wait_delivered(receiver: Receiver, tag: str, wanted: int, sidecar: subprocess.Popen[bytes]) -> None:
    """Until every line arrived, or nothing more arrived for a while (a receiver that lost some)."""
    deadline = time.monotonic() + _DELIVERY_TIMEOUT
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if sidecar.poll() is not None:
            raise InteropError(f"sidecar exited with {sidecar.returncode} during the run")
        got = len(_count(receiver, tag))
        if got >= wanted:
            return
        if got != last:
            last, since = got, time.monotonic()
        elif got and time.monotonic() - since > _QUIET:
            return
        time.sleep(0.5)


def _sidecar(receiver: Receiver, scenario: Scenario, tag: str, work: Path, creds: Credentials) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "sidecar",
        "agent",
        str(work / "logs" / "*.log"),
        "--checkpoint-dir",
        str(work / "state"),
        "--fluentd-host",
        "127.0.0.1",
        "--fluentd-port",
        str(receiver.port),
        "--tag",
        tag,
        "--flush-interval",
        "0.2s",
        "--ack-timeout",
        "10s",
        "--metrics-port",
        "0",
        *scenario.args,
    ]
    if scenario.secure:
        argv += ["--tls", "--tls-ca", str(creds.ca), "--shared-key", creds.shared_key]
        argv += ["--username", creds.user, "--password", creds.password]
    return argv


def run(receiver: Receiver, scenario: Scenario, work: Path, creds: Credentials) -> Outcome:
    """Run ``scenario`` against ``receiver`` (started and stopped here)."""
    tag = f"interop.{scenario.name}"
    settings = scenario.settings
    if scenario.secure:
        settings = Settings(tls=creds.tls, shared_key=creds.shared_key, users={creds.user: creds.password})
    for sub in ("logs", "state"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    writer = _Writer(work / "logs" / "app.log", tag, scenario, 15_000 if scenario.restart else None)
    started = time.monotonic()
    receiver.start(settings)
    try:
        writer.start()
        with (work / "sidecar.log").open("ab") as log:
            sidecar = subprocess.Popen(_sidecar(receiver, scenario, tag, work, creds), stderr=log, cwd=_REPO)
        try:
            if scenario.restart:
                _wait_until(lambda: len(_count(receiver, tag)) >= scenario.lines // 4)
                receiver.stop()
                time.sleep(2)
                receiver.start(settings)
            writer.join()
            _wait_delivered(receiver, tag, scenario.lines, sidecar)
        finally:
            sidecar.terminate()
            sidecar.wait(30)
    finally:
        receiver.stop()
    counts = _count(receiver, tag)
    duplicates = sum(counts.values()) - len(counts)
    return Outcome(receiver.name, scenario, scenario.lines, len(counts), duplicates, time.monotonic() - started)


def _wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise InteropError(f"nothing arrived within {timeout:g}s")
        time.sleep(0.1)

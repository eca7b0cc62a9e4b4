"""After SIGTERM with a backlog that stdout never pushes back on, probes are answered and the exit is bounded.

stdout is a regular file, so writes never block and a drain loop that never yields to the event loop
would read the whole backlog (the endpoint silent meanwhile) however long that takes. The backlog is
250 MB of invalid UTF-8 under ``--format json``, among the slowest bytes to encode (30-50 MB/s): several
seconds of work, which the sidecar must cut at ``--drain-timeout``, exiting within 5 s after it.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from pathlib import Path

from tests.conftest import SidecarFactory, state_offset
from tests.prom import free_port

DRAIN_TIMEOUT = 1.0
EXIT_GRACE = 5.0
ANSWER_WITHIN = DRAIN_TIMEOUT + 1.0
"""A probe must be answered this soon after SIGTERM: during the drain (a non-yielding drain of the backlog
takes 5 s or more, and answers only at its end)."""


def _alive(port: int, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as reply:
            status: int = reply.status
            return status == 200
    except OSError:
        return False


def test_a_long_drain_into_a_file_answers_probes_and_ends_by_the_drain_timeout_plus_5s(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    with app.open("wb") as out:
        for _ in range(25):
            out.write((b"\xff" * 99 + b"\n") * 100_000)
    port = free_port()
    sc = sidecar(app, "--format", "json", "--drain-timeout", f"{DRAIN_TIMEOUT}s",
                 "--metrics-port", str(port), "--metrics-address", "127.0.0.1", stdout="file")
    assert _alive(port)
    answered: list[float] = []

    def probe() -> None:
        while sc.running:
            if _alive(port):
                answered.append(time.monotonic())
            time.sleep(0.05)

    signalled = time.monotonic()
    sc.send(signal.SIGTERM)
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        assert sc.wait(timeout=DRAIN_TIMEOUT + EXIT_GRACE) == 0
    finally:
        prober.join()
    assert any(at < signalled + ANSWER_WITHIN for at in answered), f"no probe answered during the drain\n{sc.stderr()}"
    assert state_offset(checkpoint_dir, app) < app.stat().st_size, "the drain was cut at --drain-timeout"
    for big in (app, sc.runs[0].stdout_path):
        big.unlink()  # hundreds of MB; kept only when the test fails

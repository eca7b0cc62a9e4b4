"""The followers under test (``cat``, GNU ``tail -F``, ``sidecar``) and how to time one catching up.

A follower writes into a pipe read either by a C program (``head -c``: the pipe's fastest reader, so
the follower is what is measured) or by this Python process (a slower reader, as a Python consumer
would be). Wall time and CPU are split at the first byte, so that the interpreter start-up of
``sidecar`` is reported on its own instead of being folded into the throughput.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from bench.procfs import cpu_seconds
from bench.workload import REPO

Reader = Literal["c", "python"]
READERS: tuple[Reader, ...] = ("c", "python")

SIDECAR = (sys.executable, "-m", "sidecar")
"""The sidecar runs from the same interpreter (the project's .venv) as the bench."""

_READ_BUFFER = 1 << 20
_STOP_GRACE = 10.0
_POLL = 0.005
_STARTUP_ALLOWANCE = 30.0
_SLOWEST = 10e6


class BenchError(Exception):
    """A benchmark could not measure what it set out to (a follower died, or never delivered)."""


@dataclass(frozen=True, slots=True)
class Follower:
    """A command that follows files and writes their lines to stdout."""

    name: str
    argv: tuple[str, ...]
    exits_at_eof: bool = False


def cat(path: Path) -> Follower:
    return Follower("cat", ("cat", str(path)), exits_at_eof=True)


def tail(paths: Sequence[Path]) -> Follower:
    """GNU ``tail -F`` from the first line; ``-q`` so that several files get no ``==>`` headers."""
    return Follower("tail -F", ("tail", "-q", "-n", "+1", "-F", *map(str, paths)))


def sidecar(mode: str, args: Sequence[str]) -> Follower:
    return Follower(f"sidecar {mode}", (*SIDECAR, mode, *args))


def sidecar_stream(glob: Path | str, checkpoint_dir: Path, *extra: str, metrics_port: int = 0) -> Follower:
    """``sidecar stream``; metrics port 0 (the default) turns its metrics server off."""
    args = [str(glob), "--checkpoint-dir", str(checkpoint_dir), "--metrics-port", str(metrics_port), *extra]
    return sidecar("stream", args)


def sidecar_missing(mode: str) -> str | None:
    """Why ``sidecar <mode>`` cannot be benchmarked here, or ``None`` when it can."""
    try:
        done = subprocess.run(
            [*SIDECAR, mode, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return f"`sidecar {mode} --help` did not answer within 60 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`sidecar {mode}` is not available yet ({last})"
    return None


def start(follower: Follower, log: Path, stdout: int | IO[bytes] = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start a follower with its stderr in ``log`` (shown when it fails)."""
    with log.open("ab") as err:
        return subprocess.Popen(follower.argv, stdout=stdout, stderr=err, cwd=REPO)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the sidecar's clean shutdown), then SIGKILL if it lingers; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def log_tail(log: Path, lines: int = 5) -> str:
    """The last lines a follower wrote to stderr, for an error message."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no stderr)"
    return " | ".join(text[-lines:]) or "(no stderr)"


def wait_readable(fd: int, deadline: float, what: str) -> None:
    """Block until ``fd`` has data (or EOF); :class:`BenchError` saying ``what`` is missing at the deadline.

    Every read in the benches goes through here, so a follower that stops delivering fails the
    benchmark instead of hanging it.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        raise BenchError(f"{what} before the deadline")


class LineReader:
    """Complete lines from a child's stdout, each batch with the time it arrived.

    ``select`` and a buffered file object do not mix, so lines are split here from raw reads.
    """

    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._name = name
        self._log = log
        self._rest = b""

    def next_lines(self, deadline: float, waiting_for: str) -> tuple[list[bytes], int]:
        """The lines completed by the next read, and ``CLOCK_MONOTONIC`` ns when it returned."""
        wait_readable(self._fd, deadline, f"{self._name}: {waiting_for}")
        chunk = os.read(self._fd, _READ_BUFFER)
        now = time.monotonic_ns()
        if not chunk:
            raise BenchError(f"{self._name} closed its output, {waiting_for}: {log_tail(self._log)}")
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        return lines, now


def read_exactly(proc: subprocess.Popen[bytes], name: str, nbytes: int, deadline: float, log: Path) -> int:
    """Read and drop ``nbytes`` from the follower's stdout in this process; returns the bytes read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = bytearray(min(_READ_BUFFER, max(nbytes, 1)))
    got = 0
    while got < nbytes:
        wait_readable(fd, deadline, f"{name}: only {got} of {nbytes} bytes")
        n = os.readv(fd, [buf])
        if n == 0:
            status = f"exit status {proc.wait(_STOP_GRACE)}"
            raise BenchError(f"{name} closed its output after {got} of {nbytes} bytes ({status}): {log_tail(log)}")
        got += n
    return got


@dataclass(frozen=True, slots=True)
class CatchUp:
    """One follower emitting a backlog: where the time and CPU went."""

    nbytes: int
    wall: float
    startup: float
    cpu: float
    cpu_startup: float

    @property
    def mb_per_s(self) -> float:
        """Throughput after the first byte, in MB/s (10^6 bytes, as the field notes)."""
        return self.nbytes / max(self.wall - self.startup, 1e-9) / 1e6

    @property
    def cpu_per_gb(self) -> float:
        """Follower CPU seconds per GB (10^9 bytes) after the first byte."""
        return (self.cpu - self.cpu_startup) / (self.nbytes / 1e9)


def catch_up(
    follower: Follower, nbytes: int, reader: Reader, log: Path, before_stop: Callable[[], None] = lambda: None
) -> CatchUp:
    """Run ``follower`` until its reader has ``nbytes``, then stop it; the follower's own CPU is charged.

    ``before_stop`` runs once the figures are taken and the follower is still up (a scraper should not
    count the shutdown as errors). A follower slower than :data:`_SLOWEST` bytes/s after a generous
    start-up counts as stuck.
    """
    begin = time.monotonic()
    deadline = begin + _STARTUP_ALLOWANCE + nbytes / _SLOWEST
    proc = start(follower, log)
    try:
        got = read_exactly(proc, follower.name, 1, deadline, log)
        first = time.monotonic()
        cpu_first = cpu_seconds(proc.pid)
        if reader == "python":
            read_exactly(proc, follower.name, nbytes - got, deadline, log)
        else:
            _c_reader(proc, nbytes - got, deadline, follower, log)
        done = time.monotonic()
        cpu_done = cpu_seconds(proc.pid)
        before_stop()
    finally:
        stop(proc)
    return CatchUp(nbytes, done - begin, first - begin, cpu_done, cpu_first)


def _c_reader(proc: subprocess.Popen[bytes], nbytes: int, deadline: float, follower: Follower, log: Path) -> None:
    """Hand the rest of the pipe to ``head -c`` and wait for it; this process keeps no read end.

    ``head`` also ends at EOF, so a follower that dies early would look fast: while ``head`` runs, the
    follower is checked every few milliseconds without being reaped (its CPU counters must survive
    until sampled). Once ``head`` is done, a follower may die of the closed pipe (GNU ``tail`` does).
    """
    assert proc.stdout is not None
    head = subprocess.Popen(["head", "-c", str(nbytes)], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    proc.stdout.close()
    try:
        while head.poll() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"{follower.name}: head -c {nbytes} still reading at the deadline")
            gone = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            clean_exit = gone is not None and gone.si_code == os.CLD_EXITED and gone.si_status == 0
            if gone is not None and head.poll() is None and not (follower.exits_at_eof and clean_exit):
                raise BenchError(f"{follower.name} exited before delivering the backlog: {log_tail(log)}")
            time.sleep(_POLL)
    finally:
        if head.poll() is None:
            head.kill()
        head.wait()


class Drain(threading.Thread):
    """Reads and counts a follower's output in the background, so the follower never blocks on it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._cond = threading.Condition()
        self.nbytes = 0
        self.closed = False

    def run(self) -> None:
        buf = bytearray(1 << 20)
        while True:
            try:
                n = os.readv(self._fd, [buf])
            except OSError:
                n = 0
            with self._cond:
                self.nbytes += n
                self.closed = n == 0
                self._cond.notify_all()
            if n == 0:
                return

    def wait_for(self, nbytes: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.nbytes >= nbytes or self.closed, timeout) and not self.closed

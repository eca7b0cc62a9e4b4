"""Shared fixtures: temporary log and checkpoint directories, and the real CLI as a child process.

Tests of the follow core drive ``python -m sidecar`` exactly as a pod would: real files, real signals,
stdout read from a pipe (as containerd does) or written to a file. :class:`SidecarProcess` keeps the
output of every run of one sidecar (start, stop, start again) in order, so restart tests check the
concatenation. Waits poll with deadlines; a sidecar that dies while a test waits fails the wait at
once with its stderr, instead of timing out.

Fixtures:

- ``log_dir``: an empty directory for the application's logs.
- ``checkpoint_dir``: an empty directory for ``sidecar-state.json``.
- ``sidecar``: a factory ``sidecar(*args, mode="stream", stdout="pipe", start=True, ready=True)``
  returning a :class:`SidecarProcess`; it adds ``--checkpoint-dir``, ``--metrics-port 0`` and fast
  timings unless ``args`` gives them, waits for the ``started`` event when ``ready``, and kills what
  is still running at teardown (printing its stderr, which pytest shows on failure).

Helpers: :func:`read_state` and :func:`wait_for_checkpoint` read ``sidecar-state.json`` (to know the
sidecar confirmed a file up to an offset); :func:`state_entry` is one file's entry, which must exist
(so that "nothing committed" cannot pass for want of a state file); :func:`unconfirmed_lines` are the
lines a restart may repeat; :func:`scrape` reads a running sidecar's ``/metrics`` and
:func:`peak_rss_kib` its peak memory; :func:`with_defaults` and :data:`FAST_DEFAULTS` build argv
for a :class:`SidecarProcess` made by hand (as the Hypothesis model does, outside pytest fixtures).
Numbered lines to write and check come from ``tests.writer`` and ``tests.checker``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.core.loop import LendingLoop
from tests.checker import delivered, scan
from tests.writer import LogWriter

StdoutTo = Literal["pipe", "file", "held"]

# Fast timings for tests; a test that is about one of them passes its own value, which wins.
FAST_DEFAULTS: dict[str, str] = {
    "--poll-interval": "0.2s",
    "--rotate-wait": "1s",
    "--checkpoint-interval": "0.2s",
    "--metrics-port": "0",
}


class SidecarDied(AssertionError):
    """The sidecar exited while a test was waiting for it to do something."""


class _Run:
    """One start of the process: its Popen and where its stdout and stderr went."""

    def __init__(self, proc: subprocess.Popen[bytes], stdout_path: Path, stderr_path: Path) -> None:
        self.proc = proc
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.reader: threading.Thread | None = None


class SidecarProcess:
    """The ``sidecar`` CLI run as a child process, possibly several times in a row.

    ``output()`` is the stdout of all runs so far, concatenated; ``stderr()`` likewise. With
    ``stdout_to="pipe"`` a thread copies the pipe into a file as fast as it can, so the sidecar
    writes into a real pipe, as in a container; with ``"file"`` stdout is the file itself.
    Setting :attr:`stdout_rate` (bytes per second) makes that thread a slow reader instead, so the
    sidecar's writes block mid-batch, as behind a throttled ``kubectl logs`` or a stalled node agent.
    With ``"held"`` stdout is a pipe nobody reads until :meth:`release_stdout` (a reader that stopped):
    the sidecar fills it and must then wait; :meth:`stdout_pending` is what the pipe holds.
    """

    def __init__(self, workdir: Path, args: Sequence[str], mode: str = "stream", stdout_to: StdoutTo = "pipe"):
        self.workdir = workdir
        self.args = list(args)
        self.mode = mode
        self.stdout_to = stdout_to
        self.runs: list[_Run] = []
        self.stdout_rate: float | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def command(self) -> list[str]:
        """The argv of a run, for reproducing it by hand."""
        return [sys.executable, "-m", "sidecar", self.mode, *self.args]

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The current (last started) process."""
        assert self.runs, "sidecar was never started"
        return self.runs[-1].proc

    @property
    def running(self) -> bool:
        return bool(self.runs) and self.proc.poll() is None

    def start(self, ready: bool = True) -> SidecarProcess:
        """Start a new run (the previous one must have exited); by default wait until it is :meth:`ready`."""
        assert not self.running, "sidecar is already running"
        index = len(self.runs)
        stdout_path = self.workdir / f"stdout.{index}"
        stderr_path = self.workdir / f"stderr.{index}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with stderr_path.open("wb") as err:
            if self.stdout_to == "file":
                with stdout_path.open("wb") as out:
                    proc = subprocess.Popen(self.command, stdout=out, stderr=err, env=env)
                run = _Run(proc, stdout_path, stderr_path)
            elif self.stdout_to == "held":
                proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=err, env=env)
                run = _Run(proc, stdout_path, stderr_path)
            else:
                proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=err, env=env)
                run = _Run(proc, stdout_path, stderr_path)
                run.reader = threading.Thread(target=_copy_pipe, args=(self, proc, stdout_path), daemon=True)
                run.reader.start()
        self.runs.append(run)
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait for the current run's ``started`` event: files found at start are open and watched.

        Until then signal handlers may not be installed (a SIGTERM would kill, not drain), and
        ``--read-from tail`` has not yet decided where "now" is. Needs ``--log-level info`` or lower.
        """
        run = self.runs[-1]
        deadline = time.monotonic() + timeout
        while "started" not in run.stderr_path.read_text(errors="replace"):
            if run.proc.poll() is not None:
                raise SidecarDied(f"sidecar exited ({run.proc.returncode}) before it started\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sidecar not started after {timeout}s\n{self.stderr()}")
            time.sleep(0.01)

    def release_stdout(self) -> None:
        """Start reading the current run's held stdout pipe (see ``"held"``)."""
        run = self.runs[-1]
        if run.reader is None:
            run.reader = threading.Thread(target=_copy_pipe, args=(self, run.proc, run.stdout_path), daemon=True)
            run.reader.start()

    def stdout_pending(self) -> int:
        """Bytes the current run wrote into its held stdout pipe that nobody read yet (``FIONREAD``)."""
        run = self.runs[-1]
        assert run.reader is None, "only for a held stdout not yet released"
        assert run.proc.stdout is not None
        buf = fcntl.ioctl(run.proc.stdout.fileno(), termios.FIONREAD, struct.pack("i", 0))
        pending: int = struct.unpack("i", buf)[0]
        return pending

    def wait_stdout_stalled(self, quiet: float = 1.0, timeout: float = 15.0) -> int:
        """Wait until the held stdout pipe holds bytes and has not grown for ``quiet`` seconds; return how many."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            pending = self.stdout_pending()
            if pending != last:
                last, since = pending, time.monotonic()
            elif pending > 0 and time.monotonic() - since >= quiet:
                return pending
            if not self.running:
                raise SidecarDied(f"sidecar exited while its stdout was held\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"stdout pipe still filling after {timeout}s ({last} bytes)\n{self.stderr()}")

    def send(self, sig: int) -> None:
        """Send ``sig`` to the current run."""
        self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the sidecar falls behind, as in a CPU-throttled pod."""
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.send(signal.SIGCONT)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the current run to exit and its output to be collected; return its exit code."""
        run = self.runs[-1]
        code = run.proc.wait(timeout=timeout)
        if run.reader is not None:
            run.reader.join(timeout=timeout)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` (default SIGTERM: drain and checkpoint) and wait for the exit code."""
        self.send(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"sidecar did not exit within {timeout}s of {sig!r}\n{self.stderr()}") from exc

    def kill(self) -> int:
        """SIGKILL: no drain, no final checkpoint."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM, ready: bool = True) -> int:
        """Stop with ``sig`` and start again; returns the exit code of the stopped run."""
        code = self.stop(sig)
        self.start(ready)
        return code

    def open_files(self) -> set[tuple[int, int]]:
        """(dev, inode) of every regular file the current run holds open: what it can still drain."""
        found: set[tuple[int, int]] = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        try:
            links = list(fd_dir.iterdir())
        except OSError:  # exited meanwhile
            return found
        for link in links:
            try:
                st = link.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.add((st.st_dev, st.st_ino))
        return found

    def wait_let_go(self, key: tuple[int, int], timeout: float = 10.0) -> None:
        """Wait until the current run no longer holds the file ``key`` (dev, inode) open."""
        deadline = time.monotonic() + timeout
        while key in self.open_files():
            if not self.running:
                raise SidecarDied(f"sidecar exited while holding {key}\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sidecar still holds {key} open after {timeout}s\n{self.stderr()}")
            time.sleep(0.02)

    def output(self) -> bytes:
        """The stdout of every run so far, in order."""
        return b"".join(run.stdout_path.read_bytes() for run in self.runs if run.stdout_path.exists())

    def stderr(self) -> str:
        """The stderr of every run so far, in order, each run headed by its number."""
        return "".join(
            f"--- run {i} stderr ---\n{run.stderr_path.read_text(errors='replace')}" for i, run in enumerate(self.runs)
        )

    def wait_for(self, predicate: Callable[[bytes], bool], what: str, timeout: float = 10.0) -> bytes:
        """Poll the output until ``predicate(output)`` holds; fail with ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            output = self.output()
            if predicate(output):
                return output
            if not self.running:
                # The reader may still be copying the last bytes of a run that just exited.
                self.wait()
                output = self.output()
                if predicate(output):
                    return output
                raise SidecarDied(f"sidecar exited ({self.proc.returncode}) waiting for {what}\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.stderr()}")
            time.sleep(0.02)

    def wait_for_lines(self, count: int, timeout: float = 10.0) -> bytes:
        """Wait until the output holds at least ``count`` newline-terminated lines."""
        return self.wait_for(lambda out: out.count(b"\n") >= count, f"{count} output lines", timeout)

    def wait_for_bytes(self, count: int, timeout: float = 10.0) -> bytes:
        """Wait until the output is at least ``count`` bytes long."""
        return self.wait_for(lambda out: len(out) >= count, f"{count} output bytes", timeout)

    def wait_delivered(self, expected: Mapping[str, Iterable[int]], timeout: float = 10.0) -> bytes:
        """Wait until every expected numbered line (see ``tests.writer``) is in the output at least once."""
        wanted = {stream: list(seqs) for stream, seqs in expected.items()}
        total = sum(map(len, wanted.values()))
        return self.wait_for(lambda out: delivered(out, wanted), f"{total} numbered lines", timeout)

    def wait_stderr(self, text: str, timeout: float = 10.0) -> str:
        """Wait until stderr contains ``text`` (e.g. an event name); returns all stderr."""
        deadline = time.monotonic() + timeout
        while text not in (err := self.stderr()):
            if not self.running:
                raise SidecarDied(f"sidecar exited waiting for {text!r} on stderr\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {text!r} on stderr\n{err}")
            time.sleep(0.02)
        return err

    def settle(self, expected: Mapping[str, Iterable[int]], quiet: float = 1.5, timeout: float = 15.0) -> bytes:
        """:func:`settle` on this sidecar's output."""
        return settle(self.output, expected, quiet, timeout, alive=lambda: self.running)

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 10.0) -> bytes:
        """Wait until the output has not grown for ``quiet`` seconds; for asserting nothing more comes."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = len(self.output())
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return self.output()
            time.sleep(0.02)
        raise AssertionError(f"output still growing after {timeout}s\n{self.stderr()}")

    def cleanup(self) -> None:
        """Kill a run still going (teardown)."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.wait()


def settle(
    read: Callable[[], bytes],
    expected: Mapping[str, Iterable[int]],
    quiet: float = 1.5,
    timeout: float = 15.0,
    alive: Callable[[], bool] = lambda: True,
) -> bytes:
    """Wait until every expected line is in ``read()``, or it has not grown for ``quiet`` seconds.

    For tests that count what was lost: they must not wait the whole ``timeout`` for lines that will
    never come, nor judge before the sidecar is done. ``quiet`` should exceed the poll interval, the
    slowest way a file can still be found. Returns early when ``alive()`` turns false.
    """
    wanted = {stream: list(seqs) for stream, seqs in expected.items()}
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        output = read()
        if delivered(output, wanted):
            return output
        if len(output) != last:
            last, since = len(output), time.monotonic()
        elif time.monotonic() - since >= quiet or time.monotonic() > deadline or not alive():
            return output
        time.sleep(0.05)


_PACED_READ = 16384
"""What a slow reader (``stdout_rate``) takes per read."""


def _copy_pipe(process: SidecarProcess, proc: subprocess.Popen[bytes], path: Path) -> None:
    """Drain the child's stdout pipe into ``path`` until EOF, flushing each chunk for pollers.

    At ``process.stdout_rate`` bytes per second when that is set, as fast as possible otherwise.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with path.open("wb", buffering=0) as out:
        while True:
            rate = process.stdout_rate
            chunk = os.read(fd, 1 << 20 if rate is None else _PACED_READ)
            if not chunk:
                break
            out.write(chunk)
            if rate is not None:
                time.sleep(len(chunk) / rate)
    proc.stdout.close()


def with_defaults(args: Sequence[str], defaults: dict[str, str]) -> list[str]:
    """``args`` plus each default option whose name ``args`` does not already give."""
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    extra = [item for name, value in defaults.items() if name not in given for item in (name, value)]
    return [*args, *extra]


class SidecarFactory(Protocol):
    """Type of the ``sidecar`` fixture."""

    def __call__(
        self,
        *args: str | Path,
        mode: str = "stream",
        stdout: StdoutTo = "pipe",
        start: bool = True,
        ready: bool = True,
    ) -> SidecarProcess: ...


class _LendingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return LendingLoop()


@pytest.fixture(autouse=True)
def _production_loop() -> Iterator[None]:
    """In-process tests run on the loop the sidecar runs on (``asyncio.run`` included), whose data reader
    serves writes from its own thread; a test asks for a plain loop with :func:`plain_loop`."""
    asyncio.set_event_loop_policy(_LendingPolicy())
    yield
    asyncio.set_event_loop_policy(None)


@pytest.fixture
def plain_loop() -> None:
    """A plain selector loop for this test: the watcher serves writes from the loop's own reader callback."""
    asyncio.set_event_loop_policy(None)


@pytest.fixture(autouse=True)
def _writers_closed() -> Iterator[None]:
    """Each test's log writers are closed after it, so a long run does not collect their descriptors."""
    yield
    LogWriter.close_all()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """An empty directory for the application's log files."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    """An empty directory for the sidecar's state file."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def sidecar(tmp_path: Path, checkpoint_dir: Path) -> Iterator[SidecarFactory]:
    """Factory for :class:`SidecarProcess`; every process it made is killed at teardown."""
    made: list[SidecarProcess] = []

    def make(
        *args: str | Path,
        mode: str = "stream",
        stdout: StdoutTo = "pipe",
        start: bool = True,
        ready: bool = True,
    ) -> SidecarProcess:
        defaults = {"--checkpoint-dir": str(checkpoint_dir), **FAST_DEFAULTS}
        process = SidecarProcess(
            tmp_path / f"sidecar-{len(made)}", with_defaults([str(a) for a in args], defaults), mode, stdout
        )
        made.append(process)
        return process.start(ready) if start else process

    yield make
    for process in made:
        process.cleanup()
        if process.runs:
            print(" ".join(process.command))
            print(process.stderr())


def read_state(checkpoint_dir: Path) -> list[dict[str, object]]:
    """The ``files`` entries of ``sidecar-state.json`` as plain dicts ([] while there is none)."""
    try:
        doc = json.loads((checkpoint_dir / "sidecar-state.json").read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or caught mid-replace by a reader
        return []
    files: list[dict[str, object]] = doc["files"]
    return files


def wait_for_checkpoint(checkpoint_dir: Path, path: Path, offset: int, timeout: float = 10.0) -> None:
    """Wait until the state file holds the file now at ``path`` (by inode) at ``offset`` or beyond.

    This is the test's way to know the sidecar has found a file and confirmed its lines, e.g. before a
    SIGKILL whose duplicates must be bounded, or before appending with ``--read-from tail``.
    """
    ino = path.stat().st_ino
    deadline = time.monotonic() + timeout
    while True:
        entries = read_state(checkpoint_dir)
        if any(e["ino"] == ino and isinstance(e["offset"], int) and e["offset"] >= offset for e in entries):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"state file never held {path} (ino {ino}) at offset >= {offset}: {entries}")
        time.sleep(0.02)


def state_entry(checkpoint_dir: Path, path: Path) -> dict[str, object]:
    """The state file's entry for the file now at ``path`` (by device and inode); fails if there is none.

    Asserting on an offset through this, rather than over all entries, keeps "nothing was committed"
    from passing merely because no state file was written.
    """
    st = path.stat()
    entries = read_state(checkpoint_dir)
    found = [e for e in entries if e["dev"] == st.st_dev and e["ino"] == st.st_ino]
    assert found, f"no state entry for {path} (ino {st.st_ino}): {entries}"
    return found[0]


def state_offset(checkpoint_dir: Path, path: Path) -> int:
    """The offset of :func:`state_entry`: how far the sidecar has confirmed the file now at ``path``."""
    offset = state_entry(checkpoint_dir, path)["offset"]
    assert isinstance(offset, int)
    return offset


def unconfirmed_lines(checkpoint_dir: Path, paths: Iterable[Path], stream: str) -> set[int]:
    """Numbered lines of ``stream`` in ``paths`` at or past their file's offset in the state file.

    After a SIGKILL these are the only lines a restart may deliver again: everything before an offset
    was confirmed (written to stdout, or acknowledged) before it entered the state file.
    """
    offsets = {(e["dev"], e["ino"]): e["offset"] for e in read_state(checkpoint_dir)}
    found: set[int] = set()
    for path in paths:
        st = path.stat()
        offset = offsets.get((st.st_dev, st.st_ino), 0)
        assert isinstance(offset, int)
        found.update(seq for _, seq in scan(path.read_bytes()[offset:], [stream]).counts)
    return found


Labels = frozenset[tuple[str, str]]


def scrape(port: int) -> dict[tuple[str, Labels], float]:
    """Every sample on a running sidecar's ``/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Mapping[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples carrying at least ``labels`` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def _status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:"))


def peak_rss_kib(pid: int) -> int:
    """Peak resident memory of a running process (``VmHWM``), in KiB."""
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> int:
    """Resident memory of a running process now (``VmRSS``), in KiB."""
    return _status_kib(pid, "VmRSS")


# --- A real Prometheus, shared by every test that needs one (observability) -------------------------

from tests.prom import Prometheus, running_prometheus  # noqa: E402  (appended section, kept apart)

PROMETHEUS_RULES = Path(__file__).resolve().parent.parent / "examples" / "prometheus" / "sidecar-rules.yaml"


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """One Prometheus for the whole session (it needs ~5 s before it scrapes), loading the example alert
    rules and scraping ``prometheus.target_port`` every second; each test runs its exporter on that
    port and picks its own series by a label unique to it (a pattern under its tmp path)."""
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), rule_files=[PROMETHEUS_RULES]) as server:
        yield server

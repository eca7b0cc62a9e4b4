"""Issue 9's "Measured" table, measured again: lines lost and repeated under fast rotations, young kills and
copytruncate while stopped, ``sidecar stream`` beside GNU ``tail -n +1 -F`` in the same run.

Each row is tried as a new user would, black-box through the CLI with the default options: numbered lines
from :mod:`tests.writer` go into real files (rotated by rename, by a kubelet-style symlink, by Debian's
``logrotate``), the follower's stdout goes through a pipe into a file per start, and :mod:`tests.checker`
counts what came out. *Lost* are written lines never out, *repeated* the extra copies of lines out more than
once (after a SIGKILL a restart reads again what it had not saved), *corrupt* the lines out that are no line
written.

``tail -F`` has no state: where a row restarts the follower, it restarts ``tail -n +1 -F`` too, which reads
everything again, as a stateless sidecar would. A follower is done when every written line is out, or when
its output has not grown for :data:`_QUIET` seconds (what is not out by then counts as lost), and is then
stopped with SIGTERM. Each runs :data:`_RUNS` times per row, interleaved (median and worst). The table
goes to stdout, every run's counts to ``bench/out/scenarios.json``.

The timing rows also run *busy*: the follower is catching up with another file's backlog through a stdout
read slower than it reads (a node agent under load), so that it looks least when events come fastest.
Idle, a follower that reads promptly gets to every generation in time however it watches; the busy variant
is what tells a core that reacts to events as they arrive from one that looks only when it gets round to it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.followers import BenchError, log_tail, sidecar_missing, sidecar_stream, start, stop, tail
from bench.report import Figure, Outcome, median, note, show
from bench.workload import REPO, fresh_dir, quick_main, scratch_dir
from tests.checker import check, scan
from tests.test_logrotate import logrotate
from tests.test_symlink_swap import Kubelet
from tests.test_timing_rotation import rotate_keeping
from tests.writer import LogWriter

NAME = "scenarios"
OURS = "sidecar stream"
TAIL = "tail -F"
OUT = REPO / "bench" / "out" / "scenarios.json"

_RUNS = 3
_QUIET = 3.0
"""Seconds without output that end a follower's run: three of our default polls, far beyond tail's 1 s."""
_SETTLE_MAX = 60.0
_READY_TIMEOUT = 30.0
_POLL = 0.05
_PIPE_READ = 1 << 20
_SLOW_READ = 1 << 14
_BUSY_STDOUT = 30e6
"""Bytes per second a busy variant's stdout is read at: a third of what we read, as behind a node agent under load."""
_BUSY_BACKLOG = 30_000
"""Lines (~3 MB) of another file's backlog that keep the follower busy through a busy variant's row."""

Written = Mapping[str, Sequence[int]]
Settled = Literal["delivered", "quiet", "deadline"]


@dataclass(frozen=True, slots=True)
class Count:
    """What one follower made of one trial."""

    written: int
    lost: int
    repeated: int
    corrupted: int
    lines_per_start: list[int]
    """Lines out (intact or not) by each start of the follower, the last one the start that ran to the end."""
    app_lines_per_s: float | None = None
    """The application's measured rate, in the rows where it writes while the follower is killed."""


Trial = Callable[[str, Path], Count]
"""A row's scenario, run once for one contender (:data:`OURS` or :data:`TAIL`) in a scratch directory."""


def count(outputs: Sequence[bytes], written: Written) -> Count:
    """Lost, repeated and corrupt lines of the concatenated stdout of every start."""
    report = check(b"".join(outputs), written, ordered=False)
    return Count(
        written=sum(map(len, written.values())),
        lost=len(report.lost),
        repeated=sum(report.counts.values()) - report.delivered,
        corrupted=len(report.corrupted),
        lines_per_start=[output.count(b"\n") for output in outputs],
    )


class Lives:
    """One follower in one trial, started as often as the scenario says, with the stdout of each start in a file.

    Stdout is a pipe, as in a container, copied into the file by a thread of this process: as fast as it
    comes (containerd's copy keeps up), or at :data:`_BUSY_STDOUT` when ``busy``, so that the follower
    blocks on its writes mid-batch as it would behind a reader slower than itself.
    """

    def __init__(self, contender: str, work: Path, glob: Path, names: Sequence[Path], busy: bool = False) -> None:
        self._dir = fresh_dir(work, "follower-")
        checkpoints = fresh_dir(self._dir, "checkpoints-")
        self._command = sidecar_stream(glob, checkpoints) if contender == OURS else tail(names)
        self._stderr = self._dir / "stderr"
        self._outputs: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._copier: threading.Thread | None = None
        self._stdout_rate = _BUSY_STDOUT if busy else None

    def __enter__(self) -> Lives:
        return self

    def __exit__(self, *_: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def start(self) -> float:
        """Start the follower once more; returns when (``CLOCK_MONOTONIC``) it was started."""
        out = self._dir / f"stdout.{len(self._outputs)}"
        out.touch()
        self._outputs.append(out)
        read_end, write_end = os.pipe()
        began = time.monotonic()
        try:
            self._proc = start(self._command, self._stderr, write_end)
        finally:
            os.close(write_end)
        self._copier = threading.Thread(target=_copy, args=(read_end, out, self._stdout_rate), daemon=True)
        self._copier.start()
        return began

    def kill_at(self, when: float) -> None:
        """SIGKILL at ``when`` (``CLOCK_MONOTONIC``): no drain, no last checkpoint."""
        time.sleep(max(0.0, when - time.monotonic()))
        self._running().kill()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP, as CPU throttling does."""
        self._running().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._running().send_signal(signal.SIGCONT)

    def wait_holding(self, path: Path) -> None:
        """Wait until the follower holds ``path`` open (so it has read the file up to where it was)."""
        st = path.stat()
        deadline = time.monotonic() + _READY_TIMEOUT
        while (st.st_dev, st.st_ino) not in _open_files(self._running().pid):
            if time.monotonic() > deadline:
                raise BenchError(f"{self._command.name} did not open {path}: {log_tail(self._stderr)}")
            time.sleep(0.01)

    def wait_delivered(self, written: Written) -> None:
        """Wait until every line of ``written`` is out (a precondition of the scenario, not a measurement)."""
        if self._follow(written, None, _READY_TIMEOUT) != "delivered":
            raise BenchError(f"{self._command.name} did not deliver the first lines: {log_tail(self._stderr)}")

    def finish(self, written: Written) -> Count:
        """Let the running follower deliver what it will, stop it with SIGTERM, and count its output."""
        if self._follow(written, _QUIET, _SETTLE_MAX) == "deadline":
            note(f"{NAME}: {self._command.name} still writing after {_SETTLE_MAX:g} s; stopped there")
        stop(self._running())
        self._reap()
        return count([path.read_bytes() for path in self._outputs], written)

    def _reap(self) -> None:
        """Wait for the follower's exit and for the last of its output to reach the file."""
        if self._proc is not None:
            self._proc.wait()
        if self._copier is not None:
            self._copier.join()

    def _running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            status = "never started" if proc is None else f"exit status {proc.returncode}"
            raise BenchError(f"{self._command.name} exited on its own ({status}): {log_tail(self._stderr)}")
        return proc

    def _follow(self, written: Written, quiet: float | None, timeout: float) -> Settled:
        """Until every line of ``written`` is out; or, with ``quiet``, until the output stops growing that long.

        The outputs are scanned as they grow, each byte once, so that waiting costs little next to the follower.
        """
        missing = {(stream, seq) for stream, seqs in written.items() for seq in seqs}
        offsets = [0] * len(self._outputs)
        size, grew = -1, time.monotonic()
        deadline = grew + timeout
        while missing:
            for index, path in enumerate(self._outputs):
                with path.open("rb") as out:
                    out.seek(offsets[index])
                    data = out.read()
                end = data.rfind(b"\n") + 1
                missing.difference_update(scan(data[:end], written).counts)
                offsets[index] += end
            now = time.monotonic()
            total = sum(os.path.getsize(path) for path in self._outputs)
            if total != size:
                size, grew = total, now
            elif quiet is not None and now - grew >= quiet:
                return "quiet"
            if now > deadline:
                return "deadline"
            self._running()
            time.sleep(_POLL)
        return "delivered"


def _copy(pipe: int, path: Path, rate: float | None) -> None:
    """Copy a follower's stdout pipe into ``path`` until EOF, as containerd copies a container's stdout;
    no faster than ``rate`` bytes per second when given."""
    with path.open("ab", buffering=0) as out:
        while chunk := os.read(pipe, _PIPE_READ if rate is None else _SLOW_READ):
            out.write(chunk)
            if rate is not None:
                time.sleep(len(chunk) / rate)
    os.close(pipe)


def _open_files(pid: int) -> set[tuple[int, int]]:
    """(dev, inode) of what process ``pid`` holds open."""
    found: set[tuple[int, int]] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for link in fd_dir.iterdir():
        try:
            st = link.stat()
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _logs(work: Path) -> Path:
    logs = work / "logs"
    logs.mkdir()
    return logs


def rename_burst(busy: bool) -> Trial:
    """10 lines read; then 20 renames ~2 ms apart, 2,000 lines before each, ``app.log.1`` .. ``.5`` kept."""

    def trial(contender: str, work: Path) -> Count:
        logs = _logs(work)
        app, access = LogWriter(logs / "app.log"), LogWriter(logs / "access.log", "access")
        app.write(10)
        access.reopen()
        with Lives(contender, work, logs / "*.log", [app.path, access.path], busy) as lives:
            lives.start()
            lives.wait_delivered({"app": app.written})
            _keep_busy(access, busy)
            for number in range(1, 21):
                app.write(2000)
                rotate_keeping(app, number, keep=5, style="numbered")
                time.sleep(0.002)
            app.close()
            access.close()
            return lives.finish({"app": app.written, "access": access.written})

    return trial


def symlink_repoint(busy: bool) -> Trial:
    """6,000 lines read through ``containers/*.log``; then 10,000 lines into the target, and 3 times: the link
    repointed to a new container's log, 10,000 lines into it over ~15 ms."""

    def trial(contender: str, work: Path) -> Count:
        kubelet = Kubelet(work / "k8s")
        first = kubelet.start_container()
        first.write(6000)
        web = LogWriter(kubelet.pods.parent / "web.log", "web")
        web.reopen()
        web_link = kubelet.containers / "web_ns_app-0a1b2c.log"
        web_link.symlink_to(web.path)
        writers = [first]
        with Lives(contender, work, kubelet.containers / "*.log", [kubelet.link, web_link], busy) as lives:
            lives.start()
            lives.wait_delivered({first.stream: first.written})
            _keep_busy(web, busy)
            _spread(first, 10_000)
            for _ in range(3):
                writers.append(kubelet.start_container())
                _spread(writers[-1], 10_000)
            for writer in [*writers, web]:
                writer.close()
            return lives.finish({writer.stream: writer.written for writer in [*writers, web]})

    return trial


def _keep_busy(other: LogWriter, busy: bool) -> None:
    """In the busy variant, a backlog in another file that the follower is still catching up with during the row."""
    if busy:
        other.write(_BUSY_BACKLOG)


def _spread(writer: LogWriter, lines: int, writes: int = 5, gap: float = 0.003) -> None:
    """``lines`` lines in ``writes`` writes ``gap`` seconds apart, as an application starting up logs."""
    for _ in range(writes):
        writer.write(lines // writes)
        time.sleep(gap)


def kills_with_backlog(contender: str, work: Path) -> Count:
    """1,000 lines in ``app.log``; 4 times: 25,000 more in ``bulk.log``, a start, SIGKILL 0.7 s later."""
    logs = _logs(work)
    app, bulk = LogWriter(logs / "app.log"), LogWriter(logs / "bulk.log", "bulk")
    app.write(1000)
    with Lives(contender, work, logs / "*.log", [app.path, bulk.path]) as lives:
        for _ in range(4):
            bulk.write(25_000)
            lives.kill_at(lives.start() + 0.7)
        app.close()
        bulk.close()
        lives.start()
        return lives.finish({"app": app.written, "bulk": bulk.written})


class PacedWriter(threading.Thread):
    """An application writing ``rate`` lines per second: every millisecond or so, the lines due by then.

    A fixed number of lines per timer tick would fall behind the rate on a loaded machine, where ticks come late.
    """

    def __init__(self, writer: LogWriter, rate: int) -> None:
        super().__init__(daemon=True, name="paced-writer")
        self.writer = writer
        self._rate = rate
        self._done = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        while not self._done.wait(0.001):
            due = int((time.monotonic() - began) * self._rate) - len(self.writer.written)
            if due > 0:
                self.writer.write(due)

    def stop(self) -> list[int]:
        """Stop writing; every sequence number written."""
        self._done.set()
        self.join()
        self.writer.close()
        return self.writer.written


def crash_loop(contender: str, work: Path) -> Count:
    """The application writes 20,000 lines/s; the follower is killed 0.6 s after each of 8 starts."""
    app = PacedWriter(LogWriter(_logs(work) / "app.log"), 20_000)
    with Lives(contender, work, app.writer.path, [app.writer.path]) as lives:
        began = time.monotonic()
        app.start()
        for _ in range(8):
            lives.kill_at(lives.start() + 0.6)
        written = app.stop()
        rate = len(written) / (time.monotonic() - began)
        lives.start()
        return dataclasses.replace(lives.finish({"app": written}), app_lines_per_s=rate)


def copytruncate_stopped(read_first: int) -> Trial:
    """``read_first`` lines read, the follower SIGSTOPped, 6 times: 40,000 lines and ``logrotate`` with
    ``copytruncate``; 1,000 lines more, SIGCONT."""

    def trial(contender: str, work: Path) -> Count:
        app = LogWriter(_logs(work) / "app.log")
        app.reopen()
        app.write(read_first)
        with Lives(contender, work, app.path, [app.path]) as lives:
            lives.start()
            lives.wait_delivered({"app": app.written})
            lives.wait_holding(app.path)
            lives.pause()
            for _ in range(6):
                app.write(40_000)
                logrotate(work, app.path, "    copytruncate")
            app.write(1000)
            app.close()
            lives.resume()
            return lives.finish({"app": app.written})

    return trial


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the issue's table and the trial that reproduces it."""

    key: str
    what: str
    trial: Trial


ROWS = (
    Row("rename_burst", "20 renames ~2 ms apart, 5 generations kept", rename_burst(busy=False)),
    Row("rename_burst_busy", "the same, busy: 30k lines of another file, stdout at 30 MB/s", rename_burst(busy=True)),
    Row("symlink_repoint", "symlink repointed 3 times ~15 ms apart, 10k lines each", symlink_repoint(busy=False)),
    Row("symlink_repoint_busy", "the same, busy: 30k lines of another link, stdout at 30 MB/s",
        symlink_repoint(busy=True)),
    Row("kills_with_backlog", "SIGKILL 0.7 s after each of 4 starts, 25k-line backlog each", kills_with_backlog),
    Row("crash_loop", "crash loop: SIGKILL 0.6 s after each of 8 starts", crash_loop),
    Row("copytruncate_empty", "6 copytruncates while stopped, file empty when read", copytruncate_stopped(0)),
    Row("copytruncate_read", "the same after 500 lines read", copytruncate_stopped(500)),
)


def measure(row: Row, contenders: Sequence[str], runs: int) -> dict[str, list[Count]]:
    """The row's trial ``runs`` times for each contender, interleaved."""
    counts: dict[str, list[Count]] = {contender: [] for contender in contenders}
    for index in range(runs):
        for contender in contenders:
            note(f"{NAME}: {row.key}, {contender}, run {index + 1}/{runs}")
            with scratch_dir(NAME) as work:
                counts[contender].append(row.trial(contender, work))
    return counts


def _spread_of(values: Sequence[int]) -> str:
    """``median / worst`` of the runs, or one number when they are the same."""
    middle, worst = round(median(values)), max(values)
    return f"{worst:,}" if middle == worst else f"{middle:,} / {worst:,}"


def _cells(counts: Sequence[Count]) -> list[str]:
    """Lost, repeated and corrupt cells of one contender."""
    if not counts:
        return ["-", "-", "-"]
    return [
        _spread_of([c.lost for c in counts]),
        _spread_of([c.repeated for c in counts]),
        _spread_of([c.corrupted for c in counts]),
    ]


def _written(counts: Mapping[str, Sequence[Count]]) -> str:
    """Median lines written, per contender when the application wrote at its own pace and they differ."""
    medians = {name: round(median([c.written for c in runs])) for name, runs in counts.items() if runs}
    if len(set(medians.values())) == 1:
        return f"{next(iter(medians.values())):,}"
    return ", ".join(f"{written:,} ({'ours' if name == OURS else 'tail'})" for name, written in medians.items())


def _what(row: Row, counts: Mapping[str, Sequence[Count]]) -> str:
    rates = [c.app_lines_per_s for runs in counts.values() for c in runs if c.app_lines_per_s is not None]
    return f"{row.what}, app at {median(rates):,.0f} lines/s" if rates else row.what


@dataclass(frozen=True, slots=True)
class Result:
    """One row's outcome: its line in the table, in the summary, and in the JSON file."""

    cells: list[str]
    figure: Figure | None
    data: dict[str, object]


def result(number: int, row: Row, counts: Mapping[str, Sequence[Count]]) -> Result:
    what, written = f"{number}. {_what(row, counts)}", _written(counts)
    ours_lost, ours_repeated, ours_corrupt = _cells(counts.get(OURS, []))
    tail_lost, tail_repeated, tail_corrupt = _cells(counts[TAIL])
    return Result(
        [what, written, ours_lost, ours_repeated, tail_lost, tail_repeated, f"{ours_corrupt}, {tail_corrupt}"],
        Figure(
            NAME,
            what,
            f"lost {ours_lost}, repeated {ours_repeated}, of {written}",
            f"tail -F lost {tail_lost}, repeated {tail_repeated}",
        ),
        {"key": row.key, "what": what, **{name: list(map(dataclasses.asdict, runs)) for name, runs in counts.items()}},
    )


def run(quick: bool) -> Outcome:
    runs = 1 if quick else _RUNS
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring tail -F only")
    contenders = [TAIL] if missing else [OURS, TAIL]
    results: list[Result] = []
    failed: list[str] = []
    for number, row in enumerate(ROWS, 1):
        try:
            results.append(result(number, row, measure(row, contenders, runs)))
        except BenchError as error:
            note(f"{NAME}: {row.key} FAILED: {error}")
            failed.append(f"{row.key}: {error}")
            results.append(Result([f"{number}. {row.what}", "FAILED", *["-"] * 5], None,
                                  {"key": row.key, "what": row.what, "failed": str(error)}))
    spread = "one run" if runs == 1 else f"{runs} runs, median / worst (one number: the same)"
    show(
        f"{NAME}: issue 9's table, {spread}; tail -n +1 -F restarted where ours is; default options",
        ["scenario", "written", "ours lost", "ours repeated", "tail lost", "tail repeated", "corrupt ours, tail"],
        [r.cells for r in results],
    )
    data: dict[str, object] = {"runs": runs, "quiet_s": _QUIET, "rows": [r.data for r in results]}
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"date": stamp, "quick": quick, **data}, indent=1) + "\n")
    note(f"{NAME}: every run's counts in {OUT}")
    if failed:
        raise BenchError("; ".join(failed))
    if missing:
        return Outcome([Figure(NAME, OURS, "not run", missing)], data)
    return Outcome([r.figure for r in results if r.figure is not None], data)


def main() -> None:
    quick_main(run, __doc__, "one run of each follower per row instead of 3")


if __name__ == "__main__":
    main()

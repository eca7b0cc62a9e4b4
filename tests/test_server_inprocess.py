"""The file server driven in-process: the timing cases of core v2 without a subprocess in between.

A sink that blocks the event loop with ``time.sleep`` stands for a process that is stopped or
CPU-throttled: nothing of ours runs meanwhile, as under SIGSTOP, while the test rotates files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.core import discovery
from sidecar.core import server as server_module
from sidecar.core.checkpoint import CheckpointStore
from sidecar.core.config import FollowConfig, WatchBackend
from sidecar.core.discovery import Discovery
from sidecar.core.events import NullObserver
from sidecar.core.server import FileServer, TaskFailed
from sidecar.core.sink import Batch
from sidecar.core.tail import Chunk, ReadBuffer, Tail, Truncated
from sidecar.core.watch import NameEvent
from tests.checker import check
from tests.sinks import Unbuffered, until
from tests.writer import LogWriter


class FreezingSink(Unbuffered):
    """Collects lines; while ``freeze`` is set, the first batch runs it inside the loop (nothing else runs)."""


    def __init__(self) -> None:
        self.out = bytearray()
        self.freeze: Callable[[], None] | None = None

    async def emit(self, batch: Batch) -> None:
        self.out += bytes(batch.data)
        batch.commit()
        freeze, self.freeze = self.freeze, None
        if freeze is not None:
            freeze()

    def offer(self, batch: Batch) -> bool:
        return False


def _config(tmp_path: Path, path: Path, watch: WatchBackend = "auto") -> FollowConfig:
    return FollowConfig(paths=(str(path),), checkpoint_dir=tmp_path / "state", poll_interval=0.2,
                        checkpoint_interval=5.0, rotate_wait=0.3, watch=watch)


def _run_server(tmp_path: Path, path: Path, body: Callable[[FreezingSink, FileServer], object],
                watch: WatchBackend = "auto") -> FreezingSink:
    sink = FreezingSink()

    async def main() -> None:
        server = FileServer(_config(tmp_path, path, watch), sink, NullObserver())
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        await asyncio.sleep(0.2)
        result = body(sink, server)
        if asyncio.iscoroutine(result):
            await result
        stop.set()
        await task

    asyncio.run(main())
    return sink


@pytest.mark.parametrize("round_", range(3))
def test_rename_burst_with_generations_deleted_within_milliseconds_loses_nothing_in_process(
    round_: int, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = LogWriter(logs / "app.log")
    writer.write(5)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        for number in range(1, 13):
            writer.write(700)
            oldest = logs / "app.log.3"
            if oldest.exists():
                oldest.unlink()
            for older in (2, 1):
                if (logs / f"app.log.{older}").exists():
                    (logs / f"app.log.{older}").rename(logs / f"app.log.{older + 1}")
            writer.rename_rotate(logs / "app.log.1")
            await asyncio.sleep(0.002 if number % 2 else 0)
        writer.write(10)
        await until(lambda: bytes(sink.out).count(b"\n") >= len(writer.written))

    sink = _run_server(tmp_path, logs / "app.log", body)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()


def test_symlink_repointed_while_the_loop_is_frozen_reads_every_target_in_order(tmp_path: Path) -> None:
    """Three repoints while nothing of ours runs: the middle targets are found among the files created since."""
    pods, links = tmp_path / "pods", tmp_path / "links"
    pods.mkdir()
    links.mkdir()
    link = links / "app.log"
    writers = [LogWriter(pods / f"{n}.log", f"t{n}") for n in range(4)]
    writers[0].write(100)
    link.symlink_to(pods / "0.log")

    def repoint_three_times() -> None:
        for n in (1, 2, 3):
            writers[n].write(1000)
            tmp = links / ".app.log.tmp"
            tmp.symlink_to(pods / f"{n}.log")
            os.replace(tmp, link)
            time.sleep(0.015)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: bytes(sink.out).count(b"\n") == 100)
        writers[0].write(50)
        sink.freeze = repoint_three_times
        await until(lambda: bytes(sink.out).count(b"\n") >= 3150)

    sink = _run_server(tmp_path, link, body)
    report = check(bytes(sink.out), {f"t{n}": w.written for n, w in enumerate(writers)})
    assert report.ok, report.summary()


def _app_log(tmp_path: Path, lines: int) -> LogWriter:
    """``logs/app.log`` with ``lines`` lines."""
    (tmp_path / "logs").mkdir()
    writer = LogWriter(tmp_path / "logs" / "app.log")
    writer.reopen()
    writer.write(lines)
    return writer


def _copytruncate(writer: LogWriter, times: int, lines: int, apart: float) -> None:
    """``times`` copytruncates as Debian's logrotate does them, ``lines`` written before each, ``apart``
    seconds apart, then 40 lines more."""
    logs = writer.path.parent
    for _ in range(times):
        for n in range(times, 0, -1):
            if (logs / f"{writer.path.name}.{n}").exists():
                (logs / f"{writer.path.name}.{n}").rename(logs / f"{writer.path.name}.{n + 1}")
        writer.write(lines)
        shutil.copyfile(writer.path, logs / f"{writer.path.name}.1")
        os.truncate(writer.path, 0)
        time.sleep(apart)
    writer.write(40)


@pytest.mark.parametrize("read_first", [0, 300])
def test_copytruncate_while_the_loop_is_frozen_reads_every_copy_first(read_first: int, tmp_path: Path) -> None:
    writer = _app_log(tmp_path, read_first)

    def copytruncate_four_times() -> None:
        _copytruncate(writer, 4, 800, 0.01)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        writer.write(1)
        await until(lambda: bytes(sink.out).count(b"\n") == read_first + 1)
        writer.write(1)
        sink.freeze = copytruncate_four_times
        await until(lambda: bytes(sink.out).count(b"\n") >= len(writer.written), timeout=3)

    sink = _run_server(tmp_path, writer.path, body)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()


@pytest.mark.parametrize("read_first", [0, 300], ids=["empty", "300-lines"])
@pytest.mark.parametrize("stopped_in", ["open_for_reading", "open_verified", "track", "read"],
                         ids=["between-the-open-and-its-fstat", "after-the-fstat", "before-the-tail-starts",
                              "between-the-look-for-copies-and-the-first-read"])
def test_copytruncates_while_stopped_between_the_open_and_the_first_read_read_every_copy(
    stopped_in: str, read_first: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP can land anywhere between a file's open at start-up and the first read of it: the copies
    made meanwhile hold bytes the file had when we opened it, and are read, oldest first."""
    writer = _app_log(tmp_path, read_first)
    owner: Any = {"open_for_reading": discovery, "read": Tail}.get(stopped_in, Discovery)
    original = getattr(owner, stopped_in)
    stops = [lambda: _copytruncate(writer, 4, 800, 0.03)]  # further apart than the file clock's slack

    def stopped(*args: Any, **kwargs: Any) -> Any:
        done = original(*args, **kwargs)
        if stops:
            stops.pop()()
        return done

    def first_then_stop(*args: Any, **kwargs: Any) -> Any:
        if stops:
            stops.pop()()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, stopped_in, first_then_stop if stopped_in in ("track", "read") else stopped)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: bytes(sink.out).count(b"\n") >= len(writer.written), timeout=3)
        held = Counter(path for path in _open_paths() if path.startswith(f"{writer.path}."))
        assert all(count == 1 for count in held.values()), f"copies looked at and left open: {held}"

    sink = _run_server(tmp_path, writer.path, body)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()


def _open_paths() -> list[str]:
    """What this process holds open, by path."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


def test_progress_is_on_disk_soon_after_the_reader_catches_up_whatever_the_interval(tmp_path: Path) -> None:
    """--checkpoint-interval is 5 s here: the state file must still hold the lines well before that."""
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = LogWriter(logs / "app.log")

    async def body(sink: FreezingSink, server: FileServer) -> None:
        writer.write(2000)
        size = (logs / "app.log").stat().st_size
        await until(lambda: len(sink.out) == size)
        caught_up = time.monotonic()

        def saved() -> bool:
            entries = CheckpointStore(tmp_path / "state").read().entries if (tmp_path / "state").exists() else []
            return any(e.offset == size for e in entries)

        await until(saved, timeout=4.0)
        assert time.monotonic() - caught_up < 4.0

    _run_server(tmp_path, logs / "app.log", body)


class Pulse:
    """Records what the server tells the probes."""

    def __init__(self) -> None:
        self.beats = 0
        self.watching: list[bool] = []

    def beat(self) -> None:
        self.beats += 1

    def set_watching(self, watching: bool) -> None:
        self.watching.append(watching)


def test_liveness_beats_from_the_reader_and_readiness_waits_for_the_first_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    pulse, sink = Pulse(), FreezingSink()

    async def main() -> None:
        server = FileServer(_config(tmp_path, logs / "*.log"), sink, NullObserver(), pulse)
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        await asyncio.sleep(0.5)
        assert pulse.beats > 0
        assert pulse.watching == []
        LogWriter(logs / "app.log").write(3)
        await until(lambda: pulse.watching == [True])
        stop.set()
        await task

    asyncio.run(main())


def test_a_failing_housekeeping_task_ends_the_server_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in any task ends the process (the kubelet restarts it) instead of leaving it half alive."""
    logs = tmp_path / "logs"
    logs.mkdir()
    LogWriter(logs / "app.log").write(3)

    def broken(self: object) -> None:
        raise RuntimeError("housekeeping broke")

    monkeypatch.setattr(FileServer, "_give_up_overdue", broken)

    async def main() -> None:
        server = FileServer(_config(tmp_path, logs / "app.log"), FreezingSink(), NullObserver())
        await asyncio.wait_for(server.run(asyncio.Event()), timeout=10)

    with pytest.raises(TaskFailed, match="housekeeping broke"):
        asyncio.run(main())
    assert (tmp_path / "state" / "sidecar-state.json").exists(), "the last checkpoint is still written"


@pytest.mark.parametrize("watch", ["auto", "poll"])
@pytest.mark.parametrize("rotations", [1, 2, 3])
def test_rename_burst_after_a_partial_first_line_reads_every_generation_in_order(
    rotations: int, watch: WatchBackend, tmp_path: Path
) -> None:
    """Of the file we follow we read only the first bytes of its first line (a timestamp's year, which every
    generation's first line begins with too) when, while nothing of ours runs, it gets its lines and is
    renamed away under a burst of generations, then deleted. A newer generation must not be taken for its
    copy: that read it first (with a poll watcher, whose rescan looks at names before it opens new files)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_bytes(b"2026-")
    written = [b"2026-"]

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: any(t.pos == 5 for t in server._registry))
        written.append(b"12-02T18:00:00 first\n" + _lines(b"first", 47))
        with app.open("ab") as out:
            out.write(written[-1])
        for number in range(rotations):
            for older in range(rotations, 0, -1):
                if (logs / f"app.log.{older}").exists():
                    (logs / f"app.log.{older}").rename(logs / f"app.log.{older + 1}")
            app.rename(logs / "app.log.1")
            written.append(_lines(b"next%d" % number, 48))
            app.write_bytes(written[-1])
            time.sleep(0.003)
        (logs / f"app.log.{rotations}").unlink()
        await until(lambda: bytes(sink.out).count(b"\n") >= b"".join(written).count(b"\n"), timeout=3)
        await asyncio.sleep(0.3)

    sink = _run_server(tmp_path, app, body, watch)
    assert bytes(sink.out) == b"".join(written)


def _lines(tag: bytes, count: int) -> bytes:
    return b"".join(b"2026-12-02T18:00:%02d %s line %d\n" % (i % 60, tag, i) for i in range(count))


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def _copytruncate_then_append(app: Path, copy: Path, data: bytes) -> None:
    shutil.copyfile(app, copy)
    os.truncate(app, 0)
    _append(app, data)


@pytest.mark.parametrize("complete_lines", [0, 3])
def test_copytruncate_then_rename_while_frozen_reads_the_copy_before_what_the_file_holds_now(
    complete_lines: int, tmp_path: Path
) -> None:
    """While nothing of ours runs, the file is copied and truncated, gets new lines, then is renamed away
    (the copy shifted on before it). The events say the copy was created while the file held its name: it
    is looked at before the newcomer is opened, whose generation search would take it for a generation
    and read it after the file. Also when all we had read of the file was the start of a line."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"

    written = [_lines(b"first", complete_lines) + b"2026-"]
    app.write_bytes(written[0])

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: any(t.pos == len(written[0]) for t in server._registry))
        written.append(b"12-02T18:00:00 copied\n" + _lines(b"copied", 47))
        _append(app, written[-1])
        written.append(_lines(b"after", 30))
        _copytruncate_then_append(app, logs / "app.log.1", written[-1])
        (logs / "app.log.1").rename(logs / "app.log.2")
        app.rename(logs / "app.log.1")
        written.append(_lines(b"next", 20))
        app.write_bytes(written[-1])
        await until(lambda: bytes(sink.out).count(b"\n") >= b"".join(written).count(b"\n"), timeout=3)
        await asyncio.sleep(0.3)

    sink = _run_server(tmp_path, app, body)
    assert bytes(sink.out) == b"".join(written)


def _searched(tmp_path: Path, make: Callable[[Path, FileServer], None], order: list[str] | None,
              last: bytes) -> bytes:
    """``app.log`` holds "current"; once it is read, ``make`` makes generations beside it and searches, all
    before the reader runs again; the registry must then hold the files in ``order`` (when given). What
    came out."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_bytes(b"current\n")

    def search(sink: FreezingSink, server: FileServer) -> object:
        async def body() -> None:
            await until(lambda: bytes(sink.out) == b"current\n")
            make(app, server)
            if order is not None:
                assert [Path(t.path).name for t in server._registry] == order
            await until(lambda: last in bytes(sink.out))

        return body()

    return bytes(_run_server(tmp_path, app, search).out)


def _search(server: FileServer, app: Path) -> None:
    server._rotation.find_generations(str(app), str(app), time.time() - 5, str(app))


def _written_at(path: Path, data: bytes, stamp_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(stamp_ns, stamp_ns))


def test_generations_found_within_one_tick_are_ordered_by_the_events(tmp_path: Path) -> None:
    """Two generations with the same modification time (the file clock ticks every few milliseconds) and
    names that suggest the opposite order: the events that created and renamed them tell which came first."""

    def make(app: Path, server: FileServer) -> None:
        later, earlier = app.with_name("app.log.7"), app.with_name("app.log.3")
        stamp = app.stat().st_mtime_ns - 10**9  # both written before the file that holds the name
        _written_at(later, b"later\n", stamp)
        _written_at(earlier, b"earlier\n", stamp)
        events = [NameEvent(str(app), "created"), NameEvent(str(app), "gone", 1),
                  NameEvent(str(earlier), "moved_in", 1), NameEvent(str(app), "created"),
                  NameEvent(str(app), "gone", 2), NameEvent(str(later), "moved_in", 2)]
        with server._rotation.arrivals(events):
            _search(server, app)

    out = _searched(tmp_path, make, ["app.log.3", "app.log.7", "app.log"], b"later\n")
    assert out == b"current\nearlier\nlater\n"


def test_a_generation_found_late_goes_before_the_rotated_files_written_after_it(tmp_path: Path) -> None:
    """A generation missed by one search (it was between names) and found by the next is older than the
    rotated file the first search found: it is read first."""

    def make(app: Path, server: FileServer) -> None:
        now = time.time_ns()
        _written_at(app.with_name("app.log.1"), b"newer\n", now - 10**9)
        _search(server, app)
        _written_at(app.with_name("app.log.2"), b"older\n", now - 2 * 10**9)
        _search(server, app)

    out = _searched(tmp_path, make, ["app.log.2", "app.log.1", "app.log"], b"newer\n")
    assert out == b"current\nolder\nnewer\n"


def test_a_generation_written_after_the_file_we_think_holds_the_name_goes_after_it(tmp_path: Path) -> None:
    """The search a newcomer starts can find a generation renamed away after the newcomer was opened: it was
    last written after the newcomer, so it is the newer of the two, and the newcomer's lines come first."""

    def make(app: Path, server: FileServer) -> None:
        with app.open("ab") as out:
            out.write(b"more\n")
        _written_at(app.with_name("app.log.1"), b"newer\n", app.stat().st_mtime_ns + 10**9)
        _search(server, app)

    out = _searched(tmp_path, make, ["app.log", "app.log.1"], b"newer\n")
    assert out == b"current\nmore\nnewer\n"


def _renamed_on_then_followed(app: Path, stamp: int) -> None:
    """Numbered: the holder goes to ``.1``, the next generation is written and both shift up."""
    app.rename(app.with_name("app.log.1"))
    _written_at(app, b"found\n", stamp)
    app.with_name("app.log.1").rename(app.with_name("app.log.2"))
    app.rename(app.with_name("app.log.1"))


def _dated_then_followed(app: Path, stamp: int) -> None:
    """Dated: the holder and the next generation each get a name of their own."""
    app.rename(app.with_name("app.log-000001"))
    _written_at(app, b"found\n", stamp)
    app.rename(app.with_name("app.log-000002"))


def _shifted_past_an_older_one(app: Path, stamp: int) -> None:
    """Numbered: a generation rotated just before the holder was written shifts up as the holder moves."""
    _written_at(app.with_name("app.log.1"), b"found\n", stamp)
    app.with_name("app.log.1").rename(app.with_name("app.log.2"))
    app.rename(app.with_name("app.log.1"))


@pytest.mark.parametrize(("rotate", "newer"), [(_renamed_on_then_followed, True), (_dated_then_followed, True),
                                               (_shifted_past_an_older_one, False)])
def test_a_generation_written_in_the_same_tick_as_the_file_we_think_holds_the_name_is_ordered_by_its_name(
    tmp_path: Path, rotate: Callable[[Path, int], None], newer: bool
) -> None:
    """The file clock ticks every few milliseconds: in a burst of renames a millisecond apart, the file
    opened as ``app.log`` and renamed on before its search began can share its modification time with a
    generation the search finds. The renames' order (change times) and the names tell which is newer (seen
    on a loaded 2-core machine: the 25 lines of the file opened came out after the next generation's)."""
    def make(app: Path, server: FileServer) -> None:
        with app.open("ab") as out:
            out.write(b"more\n")
        rotate(app, app.stat().st_mtime_ns)
        _search(server, app)

    out = _searched(tmp_path, make, None, b"found\n" if newer else b"more\n")
    assert out == (b"current\nmore\nfound\n" if newer else b"current\nfound\nmore\n")


def test_a_generation_found_late_goes_before_every_file_we_think_holds_the_name_written_after_it(
    tmp_path: Path,
) -> None:
    """Two files opened as ``app.log`` one after the other, before the rename of the first was looked at:
    both still seem to hold the name. A generation between them that the search finds only now is older
    than the first of them, not only than the newest (seen when a sidecar resumed after a pause of a few
    milliseconds in a burst of renames: 25 lines came out after the next generation's)."""

    def make(app: Path, server: FileServer) -> None:
        stamp = app.stat().st_mtime_ns
        app.rename(app.with_name("app.log.3"))
        _written_at(app.with_name("app.log.2"), b"between\n", stamp + 10**9)
        for name, data, late in (("app.log.1", b"second\n", 2), (None, b"newest\n", 3)):
            _written_at(app, data, stamp + late * 10**9)
            server._discovery.consider_path(str(app))
            if name is not None:
                app.rename(app.with_name(name))
        _search(server, app)

    out = _searched(tmp_path, make, ["app.log", "app.log.2", "app.log", "app.log"], b"newest\n")
    assert out == b"current\nbetween\nsecond\nnewest\n"


def test_a_line_written_a_few_bytes_at_a_time_is_not_taken_for_a_rewrite(tmp_path: Path) -> None:
    """The offset marker holds the bytes just before our position; a partial line carried from read to read
    must not enter it twice, or the next read thinks the file was rewritten and starts again at 0 (the
    marker counts once the file is longer than its fingerprinted head)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    pieces = [b"m:0 " + b"x" * 300 + b"\n", b"m:1 fir", b"st\nm:2 sec", b"ond", b" line\nm:3", b" third\n"]

    async def body(sink: FreezingSink, server: FileServer) -> None:
        with app.open("ab", buffering=0) as out:
            for piece in pieces:
                out.write(piece)
                await asyncio.sleep(0.1)
        await until(lambda: bytes(sink.out).count(b"\n") >= 4)
        await asyncio.sleep(0.3)

    app.touch()
    sink = _run_server(tmp_path, app, body)
    assert bytes(sink.out) == b"".join(pieces)


def test_a_generation_seen_under_two_names_is_read_once(tmp_path: Path) -> None:
    """A file renamed while the directory is looked at can be seen under two names; a hard link is the
    same case held still. The generation search opens it once, so its lines come out once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_bytes(b"current 1\n")
    generation = logs / "app.log.1"

    def rotate_unseen(sink: FreezingSink, server: FileServer) -> object:
        async def body() -> None:
            await until(lambda: bytes(sink.out) == b"current 1\n")
            generation.write_bytes(b"".join(b"old %d\n" % i for i in range(20)))
            os.link(generation, logs / "app.log.2")
            server._rotation.find_generations(str(app), str(app), time.time() - 5, str(app))
            await until(lambda: b"old 19\n" in bytes(sink.out))
            await asyncio.sleep(0.3)

        return body()

    sink = _run_server(tmp_path, app, rotate_unseen)
    out = bytes(sink.out)
    for i in range(20):
        assert out.count(b"old %d\n" % i) == 1, out


def test_a_rotated_file_that_cannot_be_read_is_given_up_and_holds_back_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotated file whose reads fail (here EIO) is given up at once, counted and said: left open, it would
    hold back every newer file of its family for ever, since old is read before new."""
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = LogWriter(logs / "app.log")
    writer.write(5)
    failing: set[int] = set()
    read = Tail.read

    def failing_read(self: Tail, buffer: ReadBuffer) -> Chunk | Truncated | None:
        if self.key.ino in failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return read(self, buffer)

    monkeypatch.setattr(Tail, "read", failing_read)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: bytes(sink.out).count(b"\n") >= 5)
        failing.add(writer.path.stat().st_ino)
        writer.rename_rotate(logs / "app.log.1", late_lines=3)
        writer.write(7)
        await until(lambda: bytes(sink.out).count(b"\n") >= 12)
        assert server.open_files == 1

    sink = _run_server(tmp_path, logs / "app.log", body)
    report = check(bytes(sink.out), {"app": writer.written}, may_lose={"app": writer.written[5:8]})
    assert report.ok, report.summary()


def test_a_copy_named_by_the_events_and_renamed_on_since_is_still_the_copy_of_what_we_read(tmp_path: Path) -> None:
    """Stopped (CPU-throttled): logrotate copied the file to ``app.log.1`` and truncated it; we ran just long
    enough to hear of ``app.log.1`` and were stopped again, and a second copytruncate renamed that copy to
    ``app.log.2`` and put a newer one at ``app.log.1``. Acting on the events then, the copy of what we had
    read is looked for among all new siblings, not only at the name the events gave (before: the newer copy
    was taken for the only one, and the older one's lines were lost, or with ``app.log*`` read again)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    writer = LogWriter(app)
    writer.write(100)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: sink.out.count(b"\n") == 100)
        for lines in (228, 228):
            writer.write(lines)
            first = logs / "app.log.1"
            if first.exists():
                first.rename(logs / "app.log.2")
            shutil.copyfile(app, first)
            os.truncate(app, 0)
        writer.write(50)
        (tail,) = server._registry
        server._rotation.truncated(tail, app.read_bytes()[:256], only={str(logs / "app.log.1")})
        await until(lambda: sink.out.count(b"\n") >= len(writer.written))

    sink = _run_server(tmp_path, app, body)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()


@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_a_copy_of_what_the_file_holds_now_made_before_its_truncation_is_not_read_as_well(
    tmp_path: Path, glob: str, watch: WatchBackend
) -> None:
    """Stopped: logrotate (``copytruncate``, ``rotate 1``) ran once, the app wrote on, and a second run had
    shifted the first copy to ``app.log.2`` and copied the file to ``app.log.1``, but not truncated it yet,
    when we looked. ``app.log.2`` holds what we had read; ``app.log.1``, newer, is a copy of what the file
    holds now, and that content is read from the file, once, not also from the copy as content we never saw
    (before: read twice, torture seed 6083, 3 in 20 under load)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app, first, second = logs / "app.log", logs / "app.log.1", logs / "app.log.2"
    writer = LogWriter(app)
    writer.write(100)

    def copytruncate_then_copy_again() -> None:
        shutil.copyfile(app, first)
        os.truncate(app, 0)
        writer.write(110)
        first.rename(second)
        shutil.copyfile(app, first)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: sink.out.count(b"\n") == 100)
        sink.freeze = copytruncate_then_copy_again
        writer.write(1)
        await until(lambda: sink.out.count(b"\n") >= 211)
        await asyncio.sleep(0.3)
        os.truncate(app, 0)
        second.unlink()
        writer.write(40)
        await until(lambda: sink.out.count(b"\n") >= len(writer.written))
        await asyncio.sleep(0.3)

    sink = _run_server(tmp_path, logs / glob, body, watch)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()


def test_a_copy_made_before_the_name_moved_of_a_file_we_knew_nothing_of_is_read_before_it(tmp_path: Path) -> None:
    """While nothing of ours ran (SIGSTOP), a file of which we knew no byte got lines, was copied and truncated,
    got new lines and was renamed away. Only the queued events say the copy was made while the file held its
    name; the reader, first to run on waking, must hear them before it reads the file, or the file's new
    lines come out before the copy's (torture seed 8059, 811 lines out of order, 1 in 6 under load)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_bytes(b"")

    written: list[bytes] = []

    async def body(sink: FreezingSink, server: FileServer) -> None:
        (tail,) = list(server._registry)
        written.append(_lines(b"copied", 40))
        _append(app, written[-1])
        written.append(_lines(b"after", 30))
        _copytruncate_then_append(app, logs / "app.log-1", written[-1])
        app.rename(logs / "app.log-2")
        written.append(_lines(b"next", 20))
        app.write_bytes(written[-1])
        await server._read_round([tail])  # the reader runs before the loop has read the events
        await until(lambda: bytes(sink.out).count(b"\n") >= b"".join(written).count(b"\n"), timeout=3)
        await asyncio.sleep(0.3)

    sink = _run_server(tmp_path, logs / "app.log*", body)
    assert bytes(sink.out) == b"".join(written)



class _Clock:
    """The server's clock, moved by hand."""

    now = 100.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


def test_one_short_gap_between_writes_is_jitter_and_two_in_a_row_are_writes_that_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only sustained writes are batched: a line written late and the next on time is one short gap."""
    server = FileServer(_config(tmp_path, tmp_path / "app.log"), FreezingSink(), NullObserver())
    monkeypatch.setattr(server_module, "time", _Clock)
    server._end_round()
    _Clock.now += 0.003
    server._end_round()
    _Clock.now += 0.0002
    assert not server._writes_keep_coming(), "the round before the last one ended long before it"
    server._end_round()
    _Clock.now += 0.0002
    assert server._writes_keep_coming(), "two rounds in quick succession, and a write soon after"
    _Clock.now += 0.003
    assert not server._writes_keep_coming(), "a write long after the last round"


def test_a_stopped_server_lets_go_of_every_descriptor_so_another_can_take_its_checkpoint_dir(
    tmp_path: Path,
) -> None:
    """An embedding (or a test run) that stops one server and starts another in the same process must
    not be refused the directory lock by its own first server, nor collect its descriptors."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"first\n")

    def rotate(sink: FreezingSink, server: FileServer) -> None:
        os.rename(logs / "app.log", logs / "app.log.1")
        (logs / "app.log").write_bytes(b"second\n")

    before = Counter(_open_paths())
    first = _run_server(tmp_path, logs / "app.log*", rotate)
    leaked = Counter(_open_paths()) - before
    assert not leaked, f"descriptors left open by a stopped server: {dict(leaked)}"
    (logs / "app.log").write_bytes(b"second\nthird\n")
    second = _run_server(tmp_path, logs / "app.log*", lambda sink, server: None)
    assert bytes(first.out) == b"first\nsecond\n"
    assert bytes(second.out) == b"third\n"


def test_a_sweep_while_events_are_live_reads_no_file_again_whose_size_is_where_we_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of files that each got a line since the last sweep cost it an ``fstat`` each, not a read; a
    rewrite in place at the same size is still read, from its events."""
    logs = tmp_path / "logs"
    logs.mkdir()
    paths = [logs / f"app-{i}.log" for i in range(20)]
    for path in paths:
        path.write_bytes(b"first\n")
    reads: Counter[str] = Counter()
    read = Tail.read

    def counted(tail: Tail, buffer: ReadBuffer) -> Chunk | Truncated | None:
        reads[tail.path] += 1
        return read(tail, buffer)

    monkeypatch.setattr(Tail, "read", counted)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await until(lambda: sink.out.count(b"\n") == len(paths))
        for path in paths:
            with path.open("ab") as out:
                out.write(b"second\n")
        await until(lambda: sink.out.count(b"\n") == 2 * len(paths))
        reads.clear()
        await asyncio.sleep(2.5)  # two sweeps or more: one every 5 polls of 0.2 s
        assert not reads
        fd = os.open(paths[0], os.O_WRONLY)
        try:
            os.pwrite(fd, b"FIRST\nSECOND\n", 0)
        finally:
            os.close(fd)
        await until(lambda: sink.out.endswith(b"FIRST\nSECOND\n"))

    _run_server(tmp_path, logs / "*.log", body)


class HoldingSink(Unbuffered):
    """Collects lines; while ``hold`` is set, leaves them uncommitted, as agent mode does until a receiver acks."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.hold = False
        self.held: list[Batch] = []

    async def emit(self, batch: Batch) -> None:
        self.offer(batch)

    def offer(self, batch: Batch) -> bool:
        self.out += bytes(batch.data)
        if self.hold:
            self.held.append(batch)
        else:
            batch.commit()
        return True


def test_a_copy_of_lines_read_but_not_yet_delivered_when_the_file_was_copytruncated_is_read_again_after_a_restart(
        tmp_path: Path) -> None:
    """The copy holds just what we read, so it has nothing new to read; but the last 500 lines are still
    unacknowledged. A restart must read them again from the copy, not take the copy as done."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    writer = LogWriter(app)
    config = _config(tmp_path, app)

    async def run(sink: HoldingSink, body: Callable[[], Any]) -> None:
        server = FileServer(config, sink, NullObserver())
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        await body()
        stop.set()
        await task

    first, second = HoldingSink(), HoldingSink()
    sizes: dict[str, int] = {}

    async def rotate() -> None:
        writer.write(1000)
        await until(lambda: len(first.out) == app.stat().st_size)
        sizes["delivered"] = len(first.out)
        first.hold = True
        writer.write(500)
        await until(lambda: len(first.out) == app.stat().st_size)
        writer.copytruncate(logs / "app.log.1")
        writer.write(200)
        sizes["undelivered"] = (logs / "app.log.1").stat().st_size - sizes["delivered"] + app.stat().st_size
        await until(lambda: len(first.out) == sizes["delivered"] + sizes["undelivered"])

    async def read_again() -> None:
        await until(lambda: len(second.out) == sizes["undelivered"])

    asyncio.run(run(first, rotate))
    asyncio.run(run(second, read_again))
    report = check(bytes(first.out[: sizes["delivered"]] + second.out), {"app": writer.written})
    assert report.ok, report.summary()

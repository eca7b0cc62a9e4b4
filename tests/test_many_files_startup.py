"""Many files in one directory: opening them does not read the directory once per file, and the registry
finds a name's holder by looking up its prefixes.

The file server runs in-process over real files with a real inotify watcher; ``os.listdir`` is counted
where :mod:`sidecar.core.siblings` calls it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sidecar.core.config import FollowConfig
from sidecar.core.events import NullObserver
from sidecar.core.registry import Registry
from sidecar.core.server import FileServer
from sidecar.core.siblings import SETTLED_NS
from sidecar.core.sink import Batch
from sidecar.core.tail import Tail
from tests.sinks import Unbuffered

FILES = 400
LINES = 3


class CollectingSink(Unbuffered):
    """Keeps every line and commits at once."""


    def __init__(self) -> None:
        self.out = bytearray()

    async def emit(self, batch: Batch) -> None:
        self.out += batch.data
        batch.commit()

    def offer(self, batch: Batch) -> bool:
        self.out += batch.data
        batch.commit()
        return True


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _serve(tmp_path: Path, glob: str, body: Callable[[CollectingSink, FileServer], Awaitable[None]]) -> bytes:
    """Run the file server over ``glob`` while ``body`` runs; what the sink took."""
    config = FollowConfig(paths=(glob,), checkpoint_dir=tmp_path / "state", poll_interval=0.2,
                          checkpoint_interval=5.0, rotate_wait=0.3)
    sink = CollectingSink()

    async def main() -> None:
        server = FileServer(config, sink, NullObserver())
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        try:
            await body(sink, server)
        finally:
            stop.set()
            await task

    asyncio.run(main())
    return bytes(sink.out)


def _line(n: int, i: int) -> bytes:
    return b"file %03d line %d\n" % (n, i)


def test_startup_over_400_files_in_one_directory_lists_it_a_few_times_and_reads_every_line_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory is settled (its last change older than ``SETTLED_NS``), as a pod's log directory is
    when the sidecar starts; one changed within ``SETTLED_NS`` may be listed again on each look until then."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(FILES):
        (logs / f"app{n:03d}.log").write_bytes(b"".join(_line(n, i) for i in range(LINES)))
    while time.time_ns() - os.stat(logs).st_mtime_ns <= SETTLED_NS:
        time.sleep(0.01)
    listed: list[str] = []
    real_listdir = os.listdir

    def counting(directory: str) -> list[str]:
        if directory == str(logs):
            listed.append(directory)
        return real_listdir(directory)

    monkeypatch.setattr("sidecar.core.siblings.os.listdir", counting)
    seen_when_read: list[int] = []

    async def body(sink: CollectingSink, server: FileServer) -> None:
        await _until(lambda: sink.out.count(b"\n") >= FILES * LINES)
        seen_when_read.append(len(listed))

    out = _serve(tmp_path, f"{logs}/*.log", body)

    assert seen_when_read[0] <= 5
    lines = Counter(line + b"\n" for line in out.split(b"\n")[:-1])
    assert lines == Counter(_line(n, i) for n in range(FILES) for i in range(LINES))


def test_holder_of_a_name_is_the_longest_followed_name_it_extends_that_still_holds_its_name(tmp_path: Path) -> None:
    logs = Path(os.path.realpath(tmp_path / "logs"))
    logs.mkdir()
    for name in ("app.log", "app.log.1", "other.log"):
        (logs / name).write_bytes(b"%s line\n" % name.encode())

    def at(name: str) -> str:
        return str(logs / name)

    async def body(sink: CollectingSink, server: FileServer) -> None:
        await _until(lambda: sink.out.count(b"\n") >= 3)
        registry: Registry = server._registry
        tails = {os.path.basename(t.real): t for t in registry}
        assert set(tails) == {"app.log", "app.log.1", "other.log"}
        app, app1, other = tails["app.log"], tails["app.log.1"], tails["other.log"]

        assert registry.holder_for(at("app.log.1.gz")) is app1
        assert registry.holder_for(at("app.log.1")) is app1
        assert registry.holder_for(at("app.log.2")) is app
        assert registry.holder_for(at("app.log")) is app
        assert registry.holder_for(at("app.logger")) is app
        assert registry.holder_for(at("other.log-2026")) is other
        assert registry.holder_for(at("app.lo")) is None
        assert registry.holder_for(at("other")) is None
        assert registry.holder_for(str(tmp_path / "elsewhere" / "app.log.1")) is None

        def named(path: str, strict: bool = True) -> list[list[Tail]]:
            return list(registry.extended_by(path, strict))

        assert named(at("app.log.1.gz")) == [[app1], [app]]
        assert named(at("app.log.1")) == [[app]]
        assert named(at("app.log.1"), strict=False) == [[app1], [app]]
        assert named(at("app.log")) == []
        assert named(at("other.log.1")) == [[other]]

        registry.let_go(app1, "rename")
        assert registry.holder_for(at("app.log.1.gz")) is app
        assert named(at("app.log.1.gz")) == [[app1], [app]]

    _serve(tmp_path, f"{logs}/*", body)

"""The registry's reading order, as the quick path asks for it: a few named files among many."""

from __future__ import annotations

import os
from pathlib import Path

from sidecar.core.events import NullObserver
from sidecar.core.identity import FileKey, Fingerprint, read_head
from sidecar.core.registry import Registry
from sidecar.core.tail import Tail


def _tail(path: Path) -> Tail:
    path.write_bytes(b"a line\n")
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    fp = Fingerprint.of(read_head(fd))
    return Tail(FileKey(st.st_dev, st.st_ino), fd, str(path), str(path), 0, fp, lambda _: None)


def test_a_few_named_files_of_many_come_in_reading_order_after_every_insert_and_release(tmp_path: Path) -> None:
    registry = Registry(NullObserver())
    tails = [_tail(tmp_path / f"app-{i:03d}.log") for i in range(128)]
    for tail in tails:
        registry.add(tail)
    watched = [tails[50], tails[3]]

    def named() -> list[Tail]:
        chosen = registry.to_read({t.path for t in watched}, ())  # few of many: sorted, not filtered from all
        assert chosen == [t for t in registry if t in chosen]
        return chosen

    assert named() == [tails[3], tails[50]]
    older = _tail(tmp_path / "app-050.log.1")
    registry.add(older, before=tails[50])
    watched.append(older)
    assert named() == [tails[3], older, tails[50]]
    registry.release(tails[3])
    assert named() == [older, tails[50]]
    newest = _tail(tmp_path / "late.log")
    registry.add(newest)
    watched.append(newest)
    assert named() == [older, tails[50], newest]
    registry.close_all()


def test_a_wake_for_one_name_reads_its_file_alone_until_rotated_files_or_busy_ones_join_it(tmp_path: Path) -> None:
    """One name and one file (a line now and then) skips the ordering; a rotated or busy file is read too, first."""
    registry = Registry(NullObserver())
    app, other = _tail(tmp_path / "app.log"), _tail(tmp_path / "other.log")
    registry.add(other)
    registry.add(app)
    assert registry.to_read({app.path}, ()) == [app]
    assert registry.to_read({str(tmp_path / "nobody.log")}, ()) == []
    assert registry.to_read({app.path}, {other}) == [other, app]
    registry.let_go(other, "rename")
    assert registry.to_read({app.path}, ()) == [other, app]
    registry.release(other)
    registry.release(app)
    assert registry.to_read({app.path}, ()) == []
    registry.close_all()

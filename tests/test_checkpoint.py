"""The state file is replaced atomically and a bad one never stops the sidecar."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.core.checkpoint import CheckpointStore, Entry
from sidecar.core.ledger import Ledger
from sidecar.errors import CheckpointError


def _entry(offset: int) -> Entry:
    return Entry(1, 2, "ab", 2, offset, "/var/log/app.log", "/var/log/*.log", 100.0)


def test_saved_entries_load_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.prepare()
    store.save([_entry(10), _entry(20)])
    assert [e.offset for e in store.load()] == [10, 20]
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_state_file_is_no_entries(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path).load() == []


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99, "files": []}', b'{"version": 1, "files": [3]}'])
def test_corrupt_or_foreign_state_file_is_reported_and_can_be_moved_aside(tmp_path: Path, content: bytes) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or foreign"):
        store.load()
    aside = store.quarantine()
    assert aside.read_bytes() == content
    assert store.load() == []


def test_unwritable_checkpoint_dir_fails_at_start_naming_the_option(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="--checkpoint-dir"):
        CheckpointStore(blocker / "sub").prepare()


def test_ledger_moves_only_over_a_contiguous_committed_prefix() -> None:
    ledger = Ledger(0)
    first, second, third = ledger.add(10), ledger.add(20), ledger.add(30)
    second()
    assert ledger.committed == 0
    first()
    assert ledger.committed == 20
    third()
    assert ledger.committed == 30
    assert ledger.idle

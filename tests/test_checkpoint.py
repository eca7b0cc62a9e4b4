"""The state file is replaced atomically, every entry is checked on load, and one sidecar owns a directory."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import threading
from dataclasses import asdict, fields
from pathlib import Path
from random import Random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.checkpoint import _BY_TYPE, LOCK_FILE, STATE_FILE, CheckpointStore, Entry, EntryText
from sidecar.core.identity import FileKey, Fingerprint
from sidecar.core.ledger import Ledger
from sidecar.errors import CheckpointError
from tests.limits import descriptors_exhausted, lowered_limit


def _entry(offset: int, path: str = "/var/log/app.log") -> Entry:
    return Entry(1, 2, "ab", 2, offset, path, "/var/log/*.log", 100.0)


def _many(count: int) -> list[Entry]:
    return [_entry(i, f"/var/log/app-{i:05d}.log") for i in range(count)]


@pytest.mark.parametrize("path", ["/var/log/app.log", '/var/log/"quoted" \\ back\tslash.log',
                                  "/var/log/caf\u00e9-\u65e5\u672c.log", os.fsdecode(b"/var/log/bad-\xff.log")])
def test_rendered_entry_text_is_the_entrys_json_and_loads_back(tmp_path: Path, path: str) -> None:
    text = EntryText(path, "/var/log/*.log")
    for offset, fingerprint, seen, mark in [(0, "", 1.0, ""), (123, "ab" * 16, 1_733_000_000.123456, "cd" * 16),
                                            (2**40, "ef" * 16, 1e-7, "01" * 16)]:
        entry = Entry(7, 42, fingerprint, len(fingerprint) // 2, offset, path, "/var/log/*.log", seen, mark=mark,
                      mark_len=len(mark) // 2)
        fp = Fingerprint(fingerprint, entry.fp_len)
        rendered = text.render(FileKey(7, 42), fp, offset, repr(seen), mark, entry.mark_len)
        assert rendered == json.dumps(asdict(entry), separators=(",", ":"))
        store = CheckpointStore(tmp_path)
        store.prepare()
        store.save([rendered, _entry(5)])
        assert store.load() == [entry, _entry(5)]
        store.close()


def test_saved_entries_load_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.prepare()
    store.save([_entry(10), _entry(20)])
    assert [e.offset for e in store.load()] == [10, 20]
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("count", [0, 1, 255, 256, 257, 1000])
def test_a_state_file_written_a_group_of_entries_at_a_time_is_one_json_document(tmp_path: Path, count: int) -> None:
    store = CheckpointStore(tmp_path)
    store.prepare()
    entries = _many(count)
    store.save([*entries[: count // 2], *(json.dumps(asdict(e), separators=(",", ":")) for e in entries[count // 2 :])])
    doc = json.loads(store.path.read_bytes())
    assert doc["version"] == 1
    assert len(doc["files"]) == count
    assert store.load() == entries
    store.close()


def test_a_state_file_that_reads_back_different_is_not_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path)
    store.prepare()
    store.save([_entry(10)])
    before = store.path.read_bytes()
    real_pread = os.pread

    def flipped(fd: int, length: int, offset: int) -> bytes:
        data = real_pread(fd, length, offset)
        return data[:-1] + b"?" if offset == 0 and data else data

    monkeypatch.setattr(os, "pread", flipped)
    with pytest.raises(CheckpointError, match="previous one is kept"):
        store.save(_many(300))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    store.close()


def test_missing_state_file_is_no_entries(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path).load() == []


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 99, "files": []}', b'{"version": 1, "files": 3}', b'{"version": 1}']
)
def test_corrupt_or_foreign_state_file_is_reported_and_can_be_moved_aside(tmp_path: Path, content: bytes) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or foreign"):
        store.load()
    aside = store.quarantine()
    assert aside.read_bytes() == content
    assert store.load() == []


GOOD = asdict(_entry(7))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({**GOOD, "path": None}, "path is not a string (null)"),
        ({**GOOD, "path": ""}, 'path is empty ("")'),
        ({**GOOD, "seen": "x"}, 'seen is not a number ("x")'),
        ({**GOOD, "offset": -5}, "offset is negative (-5)"),
        ({**GOOD, "offset": True}, "offset is not an integer (true)"),
        ({**GOOD, "dev": "1"}, 'dev is not an integer ("1")'),
        ({**GOOD, "ino": 2.5}, "ino is not an integer (2.5)"),
        ({**GOOD, "fp_len": 100_000}, "fp_len is over 256 (100000)"),
        ({**GOOD, "fingerprint": 12}, "fingerprint is not a string (12)"),
        ({**GOOD, "gone_since": "y"}, 'gone_since is not a number ("y")'),
        ({k: v for k, v in GOOD.items() if k != "offset"}, "has no offset"),
        (3, "is not an object"),
    ],
)
def test_a_bad_entry_is_dropped_with_one_line_naming_the_file_and_entry_and_the_rest_is_kept(
    tmp_path: Path, bad: Any, problem: str
) -> None:
    store = CheckpointStore(tmp_path)
    other = {**GOOD, "ino": 3, "offset": 9}
    store.path.write_text(json.dumps({"version": 1, "files": [GOOD, bad, other]}))
    loaded = store.read()
    assert [(e.ino, e.offset) for e in loaded.entries] == [(2, 7), (3, 9)]
    assert loaded.dropped == [f"state file {store.path}: entry 1 dropped: {problem}"]


def test_entries_may_omit_gone_since_and_carry_keys_of_a_newer_sidecar(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    lean = {k: v for k, v in GOOD.items() if k != "gone_since"}
    store.path.write_text(json.dumps({"version": 1, "files": [{**lean, "generation": 4}]}))
    assert store.read().entries == [_entry(7)]


def test_every_entry_field_has_a_check() -> None:
    assert {str(f.type) for f in fields(Entry)} <= set(_BY_TYPE)


def test_unwritable_checkpoint_dir_fails_at_start_naming_the_option(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="--checkpoint-dir"):
        CheckpointStore(blocker / "sub").prepare()


def test_a_save_that_cannot_write_every_byte_fails_and_keeps_the_previous_state_file(tmp_path: Path) -> None:
    """A short write (here: past RLIMIT_FSIZE, as on a nearly full volume) must not be renamed into place."""
    store = CheckpointStore(tmp_path)
    store.prepare()
    store.save([_entry(10)])
    before = store.path.read_bytes()
    with lowered_limit(resource.RLIMIT_FSIZE, 4096), pytest.raises(CheckpointError, match="previous one is kept"):
        store.save(_many(200))
    assert store.path.read_bytes() == before
    assert [e.offset for e in store.load()] == [10]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK_FILE, STATE_FILE])


def test_saves_from_another_thread_and_another_process_never_expose_a_partial_file(tmp_path: Path) -> None:
    """The lead's checkpointer saves from a worker thread; a stray second process saves too: every read
    sees a whole state file and no save fails on the other's temp file."""
    store = CheckpointStore(tmp_path)
    store.save(_many(100))
    other = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from tests.test_checkpoint import _many;"
         "from sidecar.core.checkpoint import CheckpointStore;"
         "store = CheckpointStore(Path(sys.argv[1]))\n"
         "for _ in range(40): store.save(_many(100))", str(tmp_path)],
        cwd=Path(__file__).parent.parent,
    )
    errors: list[Exception] = []

    def saving() -> None:
        try:
            for _ in range(40):
                store.save(_many(100))
        except CheckpointError as error:
            errors.append(error)

    threads = [threading.Thread(target=saving) for _ in range(2)]
    for thread in threads:
        thread.start()
    reads = 0
    while any(t.is_alive() for t in threads) or other.poll() is None:
        assert len(store.load()) == 100
        reads += 1
    for thread in threads:
        thread.join()
    assert other.wait() == 0
    assert errors == []
    assert reads > 10


def test_a_second_store_on_a_locked_directory_fails_naming_the_holder(tmp_path: Path) -> None:
    first = CheckpointStore(tmp_path)
    first.prepare()
    holder = f"{tmp_path / LOCK_FILE} is locked by pid {os.getpid()} on "
    with pytest.raises(CheckpointError, match=re.escape(holder)):
        CheckpointStore(tmp_path).prepare()
    first.close()
    CheckpointStore(tmp_path).prepare()


def test_prepare_removes_temp_files_a_crashed_run_left(tmp_path: Path) -> None:
    (tmp_path / f".{STATE_FILE}.4242.tmp").write_bytes(b"{")
    CheckpointStore(tmp_path).prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]


def test_the_state_file_is_saved_when_the_process_has_no_descriptor_left(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.prepare()
    with descriptors_exhausted():
        store.save([_entry(10)])
        store.save([_entry(20)])
    assert [e.offset for e in store.load()] == [20]


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


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=600), st.integers(min_value=0, max_value=400), st.randoms())
def test_ledger_in_any_commit_order_stands_past_the_longest_committed_prefix(
    batches: int, spread: int, rng: Random
) -> None:
    """Batch ``i`` is committed at about ``i + rng.randint(0, spread)``: in order, nearly, or at random."""
    moves: list[int] = []
    steps: list[int] = []

    def advanced(moved: int) -> None:
        moves.append(ledger.committed)
        steps.append(moved)

    ledger = Ledger(0, advanced)
    commits = [ledger.add(10 * (i + 1)) for i in range(batches)]
    done = [False] * batches
    for index in sorted(range(batches), key=lambda i: (i + rng.randint(0, spread), i)):
        was = ledger.committed
        commits[index]()
        if rng.random() < 0.1:
            commits[index]()  # a second commit of the same batch changes nothing
        done[index] = True
        prefix = next((i for i, d in enumerate(done) if not d), batches)
        assert ledger.committed == 10 * prefix
        if ledger.committed != was:
            assert moves[-1] == ledger.committed
    assert ledger.idle
    assert moves == sorted(set(moves))
    assert sum(steps) == ledger.committed, "each advance reports the bytes it moved by"
    first, second = ledger.add(10 * batches + 5), ledger.add(10 * batches + 9)
    first()
    commits[rng.randrange(batches)]()  # a batch of the settled list, committed again
    assert ledger.committed == 10 * batches + 5
    second()
    assert ledger.committed == 10 * batches + 9
    assert ledger.idle

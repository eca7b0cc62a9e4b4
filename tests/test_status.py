"""``sidecar status`` over real state files written by the checkpoint store and real log files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from click.testing import CliRunner, Result

from sidecar.core.checkpoint import STATE_FILE, CheckpointStore, Entry
from sidecar.core.identity import Fingerprint
from sidecar.tools.status import status_command
from tests.conftest import SidecarFactory


def entry_for(path: Path, offset: int, pattern: str) -> Entry:
    st = path.stat()
    fp = Fingerprint.of(path.read_bytes())
    return Entry(st.st_dev, st.st_ino, fp.digest, fp.length, offset, str(path), pattern, time.time() - 5)


def write_log(path: Path, lines: int) -> Path:
    path.write_bytes(b"".join(b"line %05d of %s\n" % (i, path.name.encode()) for i in range(lines)))
    return path


def status(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(status_command, list(args), env=env)


def save(state: Path, *entries: Entry) -> None:
    CheckpointStore(state).save(entries)


def test_table_shows_offset_current_size_and_lag(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log", 10)
    save(tmp_path, entry_for(log, 40, str(tmp_path / "*.log")))
    result = status("--checkpoint-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    title, header, row = result.output.splitlines()
    assert title.startswith(f"{tmp_path / STATE_FILE}: 1 file(s), written ")
    assert header.split() == ["PATH", "DEV:INODE", "OFFSET", "SIZE", "LAG", "UPDATED"]
    size = log.stat().st_size
    st = log.stat()
    assert row.split()[:5] == [str(log), f"{st.st_dev}:{st.st_ino}", "40", str(size), str(size - 40)]
    assert row.endswith("(5s ago)")


def test_json_output_gives_the_same_facts_for_scripts(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log", 3)
    save(tmp_path, entry_for(log, 0, str(tmp_path / "*.log")))
    result = status("--checkpoint-dir", str(tmp_path), "--json")
    doc = json.loads(result.output)
    (file,) = doc["files"]
    size = log.stat().st_size
    assert (file["path"], file["offset"], file["size"], file["lag"], file["gone"]) == (str(log), 0, size, size, False)
    assert doc["state_file"] == str(tmp_path / STATE_FILE)


def test_a_renamed_file_is_found_under_its_new_name(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log", 10)
    entry = entry_for(log, 30, str(tmp_path / "app.log*"))
    log.rename(tmp_path / "app.log.1")
    write_log(tmp_path / "app.log", 2)  # the new file at the old name is someone else
    save(tmp_path, entry)
    (file,) = json.loads(status("--checkpoint-dir", str(tmp_path), "--json").output)["files"]
    assert file["lag"] == (tmp_path / "app.log.1").stat().st_size - 30


def test_deleted_and_recreated_files_are_gone(tmp_path: Path) -> None:
    deleted = write_log(tmp_path / "deleted.log", 5)
    recreated = write_log(tmp_path / "recreated.log", 5)
    entries = [entry_for(p, 10, str(tmp_path / "none-*")) for p in (deleted, recreated)]
    deleted.unlink()
    recreated.unlink()
    recreated.write_bytes(b"different content that may even reuse the inode\n")
    save(tmp_path, *entries)
    result = status("--checkpoint-dir", str(tmp_path))
    rows = result.output.splitlines()[2:]
    assert [row.split()[3:5] for row in rows] == [["-", "gone"], ["-", "gone"]]


def test_a_file_marked_gone_in_the_state_is_gone(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log", 5)
    entry = entry_for(log, 10, str(log))
    entry.gone_since = time.time()
    save(tmp_path, entry)
    (file,) = json.loads(status("--checkpoint-dir", str(tmp_path), "--json").output)["files"]
    assert (file["gone"], file["lag"]) == (True, None)


def test_checkpoint_dir_is_read_from_the_environment(tmp_path: Path) -> None:
    save(tmp_path)
    result = status(env={"SIDECAR_CHECKPOINT_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "0 file(s)" in result.output


def test_a_missing_state_file_is_a_one_line_error_with_exit_code_1(tmp_path: Path) -> None:
    result = status("--checkpoint-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"sidecar status: no state file at {tmp_path / 'nowhere' / STATE_FILE}")
    assert result.stderr.count("\n") == 1


def test_a_corrupt_state_file_is_a_one_line_error_with_exit_code_1(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b'{"version": 1, "files": [{"dev": "x"')
    result = status("--checkpoint-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "is corrupt" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_bad_entry_is_one_line_on_stderr_and_the_other_files_are_shown(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log", 3)
    good = asdict(entry_for(log, 0, str(log)))
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 1, "files": [{**good, "path": None}, good]}))
    result = status("--checkpoint-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert [f["path"] for f in json.loads(result.stdout)["files"]] == [str(log)]
    assert result.stderr == (f"sidecar status: state file {tmp_path / STATE_FILE}: entry 0 dropped: "
                             "path is not a string (null) (the sidecar drops it too)\n")


def test_status_of_a_real_sidecar_shows_the_bytes_written_since_it_stopped(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    log = write_log(log_dir / "app.log", 50)
    process = sidecar(f"{log_dir}/*.log")
    process.wait_for_lines(50)
    assert process.stop() == 0
    with log.open("ab") as out:
        out.write(b"written while the sidecar was down\n")
    command = [sys.executable, "-m", "sidecar", "status", "--checkpoint-dir", str(checkpoint_dir), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    (file,) = json.loads(result.stdout)["files"]
    assert (file["path"], file["lag"], file["size"]) == (str(log), 35, log.stat().st_size)

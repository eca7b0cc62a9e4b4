"""``--format json`` is valid JSON (Unicode only) whatever bytes a file's name holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import SidecarFactory


def test_a_file_name_that_is_not_utf8_comes_out_as_valid_json_with_a_replacement_character(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    name = os.fsdecode(b"bad\xffname.log")
    (log_dir / name).write_bytes(b"first\nsecond\n")
    (log_dir / "good.log").write_bytes(b"third\n")
    sc = sidecar(log_dir / "*.log", "--format", "json")
    out = sc.wait_for_lines(3)
    sc.stop()
    assert b"\\udcff" not in out
    records = [json.loads(line) for line in out.splitlines()]
    files = {record["file"] for record in records}
    for path in files:
        path.encode("utf-8")  # strict parsers (Go, Rust, Java) refuse lone surrogates; this raises on them
    assert files == {f"{log_dir}/bad\ufffdname.log", f"{log_dir}/good.log"}
    assert sorted(record["log"] for record in records) == ["first", "second", "third"]

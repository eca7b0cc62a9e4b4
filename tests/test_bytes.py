"""Whatever bytes an application writes come out of ``sidecar stream`` unchanged (raw mode).

Lines are the unit, not text: no decoding, no newline translation, no trimming. The one change the
sidecar makes on purpose is splitting a line longer than ``--max-line-bytes`` into pieces, each
ending in ``\\n`` and cut on a UTF-8 character boundary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import SidecarFactory, StdoutTo

CASES: dict[str, bytes] = {
    "empty-lines": b"\n\n\nafter three empty lines\n\n",
    "crlf": b"windows line\r\nanother\r\n\r\n",
    "invalid-utf8": b"bad \xff\xfe bytes \xc3\x28 and a lone \x80 continuation\n",
    "nul-bytes": b"nul\x00in\x00the middle\x00\n\x00\n",
    "bom": b"\xef\xbb\xbfstarts with a BOM\nsecond\n",
    "tabs-and-controls": b"\tindented\twith tabs\x1b[31m colour \x1b[0m\x07\n",
    "utf8": "ünïcödé ✓ 日本語 🚀\n".encode(),
    "cri-16kib": b"2026-11-23T14:00:00.000000000Z stdout P " + b"x" * 16384 + b"\n",
    "lone-cr": b"carriage\rreturn inside\n",
}


@pytest.mark.parametrize("content", CASES.values(), ids=CASES.keys())
def test_raw_mode_passes_bytes_through_unchanged(content: bytes, log_dir: Path, sidecar: SidecarFactory) -> None:
    (log_dir / "app.log").write_bytes(content)
    sc = sidecar(log_dir / "app.log")
    sc.wait_for_bytes(len(content))
    assert sc.stop() == 0
    assert sc.output() == content


@pytest.mark.parametrize("stdout", ["pipe", "file"])
def test_all_byte_cases_in_one_file_arrive_in_order_when_written_piecewise(
    stdout: StdoutTo, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Each case is written in two halves with the sidecar catching up in between: reads split everywhere.

    stdout as a pipe (a container runtime) and as a regular file (``sidecar stream > file``).
    """
    app = log_dir / "app.log"
    app.touch()
    sc = sidecar(app, stdout=stdout)
    expected = b""
    with app.open("ab", buffering=0) as out:
        for content in CASES.values():
            for half in (content[: len(content) // 2], content[len(content) // 2 :]):
                out.write(half)
                expected += half
                complete = expected[: expected.rfind(b"\n") + 1]
                sc.wait_for_bytes(len(complete))
    assert sc.stop() == 0
    assert sc.output() == expected


def test_crlf_split_across_two_reads_stays_together(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    app.write_bytes(b"first\r")
    sc = sidecar(app)
    sc.wait_quiet(0.4)
    assert sc.output() == b""
    with app.open("ab") as out:
        out.write(b"\nsecond\r\n")
    sc.wait_for_bytes(15)
    assert sc.stop() == 0
    assert sc.output() == b"first\r\nsecond\r\n"


def test_line_longer_than_the_read_buffer_comes_out_whole(log_dir: Path, sidecar: SidecarFactory) -> None:
    """The read chunk is 1 MiB; with a larger ``--max-line-bytes`` a 3 MiB line is not split."""
    line = os.urandom(3 * 1024 * 1024).replace(b"\n", b"n") + b"\n"
    (log_dir / "app.log").write_bytes(line + b"next\n")
    sc = sidecar(log_dir / "app.log", "--max-line-bytes", "4MiB")
    sc.wait_for(lambda out: out.endswith(b"next\n"), "the long line and the next")
    assert sc.stop() == 0
    assert sc.output() == line + b"next\n"


def test_line_over_max_line_bytes_is_split_on_utf8_boundaries(log_dir: Path, sidecar: SidecarFactory) -> None:
    """1000-byte pieces of a line of 2- and 3-byte characters: no piece may end inside a character."""
    text = ("a" + "é€" * 700).encode()  # 3501 bytes; byte 1000 falls inside a "€"
    (log_dir / "app.log").write_bytes(text + b"\nshort\n")
    sc = sidecar(log_dir / "app.log", "--max-line-bytes", "1000")
    sc.wait_for(lambda out: out.endswith(b"short\n"), "the split line and the next")
    assert sc.stop() == 0
    pieces = sc.output().split(b"\n")[:-2]
    assert len(pieces) == 4
    assert all(0 < len(piece) <= 1000 for piece in pieces)
    for piece in pieces:
        piece.decode("utf-8")  # raises if a character was cut
    assert b"".join(pieces) == text


def test_long_invalid_utf8_line_is_split_at_max_line_bytes(log_dir: Path, sidecar: SidecarFactory) -> None:
    """Continuation bytes only: no boundary to find, so the cut falls where it must and nothing is lost."""
    text = b"\x80" * 2500
    (log_dir / "app.log").write_bytes(text + b"\n")
    sc = sidecar(log_dir / "app.log", "--max-line-bytes", "1000")
    sc.wait_for(lambda out: out.count(b"\n") >= 3, "three pieces")
    assert sc.stop() == 0
    pieces = sc.output().split(b"\n")[:-1]
    assert [len(p) for p in pieces] == [1000, 1000, 500]
    assert b"".join(pieces) == text


def test_json_format_emits_one_object_per_line_and_survives_invalid_utf8(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Chosen encoding: invalid UTF-8 becomes U+FFFD (JSON text is Unicode); a CRLF's ``\\r`` is dropped."""
    app = log_dir / "app.log"
    lines = [b"plain", b"", b"bad \xff\xfe end", b'quote " and \\ backslash', b"windows\r", b"nul\x00tab\t"]
    app.write_bytes(b"".join(line + b"\n" for line in lines))
    sc = sidecar(app, "--format", "json")
    out = sc.wait_for_lines(len(lines))
    assert sc.stop() == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert records == [{"file": str(app), "log": line.removesuffix(b"\r").decode("utf-8", "replace")} for line in lines]

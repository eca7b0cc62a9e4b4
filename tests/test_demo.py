"""`make run`'s demo is a newcomer's first contact: it must stream every line once through both rotations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo" / "demo.py"


def test_demo_streams_every_line_once_through_rename_and_copytruncate() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--seconds", "4", "--rate", "100", "--rotate-every", "1"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    numbers = [int(line.split(b"line=")[1].split()[0]) for line in result.stdout.splitlines()]
    assert numbers, result.stderr.decode()
    assert numbers == list(range(1, len(numbers) + 1)), "every line once, in order"
    stderr = result.stderr.decode()
    assert "by rename" in stderr
    assert "by copytruncate" in stderr
    assert "/metrics" in stderr

"""`make run`'s demo is a newcomer's first contact: it must stream every line once through both rotations."""

from __future__ import annotations

import re
import shutil
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
    stderr = result.stderr.decode()
    kept = re.search(r"files kept in (\S+)", stderr)
    assert kept, stderr
    workdir = Path(kept.group(1))
    try:
        # The app has stopped before the sidecar gets SIGTERM: every line it wrote is in these files.
        on_disk = [int(n) for log in (workdir / "logs").iterdir() for n in re.findall(rb"line=(\d+)", log.read_bytes())]
    finally:
        shutil.rmtree(workdir)
    assert result.returncode == 0, stderr
    numbers = [int(line.split(b"line=")[1].split()[0]) for line in result.stdout.splitlines()]
    assert numbers, stderr
    assert numbers == list(range(1, max(on_disk) + 1)), "every line the app wrote, once, in order"
    assert "by rename" in stderr
    assert "by copytruncate" in stderr
    assert "/metrics" in stderr

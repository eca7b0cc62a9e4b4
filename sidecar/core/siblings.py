"""Finding a file's rotated generations beside it (``app.log.1``, ``app.log-20261123``).

Rotation can move content where no glob looks: logrotate's copy in copytruncate, generations renamed
faster than we poll, files rotated while the sidecar was down. They all sit next to the file under a
name that extends its name, which is where these functions look.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".z")


@dataclass(frozen=True, slots=True)
class Sibling:
    path: str
    st: os.stat_result


def siblings(real_path: str) -> Iterator[Sibling]:
    """Regular files in ``real_path``'s directory whose names extend its name; compressed ones are skipped."""
    directory, base = os.path.split(real_path)
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name == base or not name.startswith(base) or name.lower().endswith(COMPRESSED):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield Sibling(entry.path, st)

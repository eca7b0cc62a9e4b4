"""Process limits for tests of what happens at them: a lowered soft limit, every descriptor taken."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def lowered_limit(which: int, soft: int) -> Iterator[None]:
    """Lower one of this process's soft limits (``resource.RLIMIT_*``) for the duration."""
    old = resource.getrlimit(which)
    resource.setrlimit(which, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(which, old)


@contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """Open descriptors until the next ``open`` fails with EMFILE; close them all afterwards.

    The limit is set just above the highest descriptor in use, so that one closed now is one that can be
    opened again (not one above the limit, left there by earlier tests in the same process).
    """
    hogs: list[int] = []
    with lowered_limit(resource.RLIMIT_NOFILE, max(map(int, os.listdir("/proc/self/fd"))) + 16):
        try:
            while True:
                hogs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass
        try:
            yield
        finally:
            for fd in hogs:
                os.close(fd)

"""Reporting what goes wrong with one file: a metric every time, one stderr line per file and kind.

A file that cannot be opened or read costs that file only; the others flow. Repeating the same line
every poll would bury the one that matters, so a file's complaint is said once until it recovers.
"""

from __future__ import annotations

import errno
import resource

from sidecar.core.events import Observer
from sidecar.log import get_logger

log = get_logger("sidecar.core")


def reason_of(exc: OSError) -> str:
    """A short errno word for metrics: ``eacces``, ``emfile``, ..."""
    return errno.errorcode.get(exc.errno or 0, "error").lower()


def _open_hint(exc: OSError) -> str:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return (f"cannot open: too many open files (limit {soft}); raise the container's nofile ulimit "
                "or follow fewer files")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot open: {exc.strerror}; fix its permissions or run the sidecar as a user that can read it"
    return f"cannot open: {exc.strerror}"


class Problems:
    """Counts and reports per-file errors; see the module docstring."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer
        self._said: set[str] = set()

    def cannot_open(self, path: str, pattern: str, exc: OSError) -> None:
        self._observer.read_error(pattern, reason_of(exc))
        self._once(path, reason_of(exc), _open_hint(exc))

    def cannot_read(self, path: str, pattern: str, exc: OSError) -> None:
        self._observer.read_error(pattern, reason_of(exc))
        self._once(path, reason_of(exc), f"read failed: {exc.strerror}")

    def not_regular(self, path: str, pattern: str) -> None:
        self._observer.read_error(pattern, "not_regular")
        self._once(path, "not_regular", "matched path is not a regular file; exclude it")

    def recovered(self, path: str) -> None:
        self._said.discard(path)

    def _once(self, path: str, reason: str, message: str) -> None:
        if path not in self._said:
            self._said.add(path)
            log.error("file_error", path=path, reason=reason, message=message)

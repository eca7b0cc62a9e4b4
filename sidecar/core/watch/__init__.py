"""Noticing that files changed: inotify for low latency, stat polling as the fallback and safety net.

Both backends answer one question — "wake me when something under these directories may have
changed, or when the poll interval is up" — so the follow core never knows which one it has. Polling
always runs: inotify can overflow, and does not see network or FUSE filesystems.
"""

from __future__ import annotations

from sidecar.core.config import WatchBackend
from sidecar.core.watch.base import Changes, NameEvent, Watcher
from sidecar.core.watch.inotify import InotifyUnavailable, InotifyWatcher
from sidecar.core.watch.poll import PollWatcher
from sidecar.log import get_logger

__all__ = ["Changes", "NameEvent", "Watcher", "make_watcher"]

log = get_logger(__name__)


def make_watcher(backend: WatchBackend) -> Watcher:
    """The inotify watcher where the kernel offers it (unless polling was asked for), else polling."""
    if backend == "poll":
        return PollWatcher()
    try:
        return InotifyWatcher()
    except InotifyUnavailable as exc:
        if backend == "inotify":
            raise
        log.warning("inotify_unavailable", reason=str(exc), fallback="poll")
        return PollWatcher()

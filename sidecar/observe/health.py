"""Liveness and readiness as the kubelet probes see them on ``/healthz`` and ``/readyz``.

The HTTP server runs in the sidecar's own event loop, so merely answering proves that loop turns. What
it cannot prove is that the follow loop still makes progress; that loop calls :meth:`Health.beat` each
round, and a missing heartbeat makes the sidecar not alive, so the kubelet restarts it. Readiness adds
what must hold for logs to flow: files are being watched, and every check a mode registered (agent
mode: a receiver is connected or the outage is within its limit) has no reason to object.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
ReadyCheck = Callable[[], str | None]

DEFAULT_STALL_AFTER = 30.0


class Health:
    """Answers the probes from the heartbeat, the watching flag and the registered ready checks."""

    def __init__(self, stall_after: float = DEFAULT_STALL_AFTER, clock: Clock = time.monotonic) -> None:
        self._stall_after = stall_after
        self._clock = clock
        self._last_beat = clock()
        self._watching = False
        self._checks: list[tuple[str, ReadyCheck]] = []

    def beat(self) -> None:
        """The follow loop completed a round."""
        self._last_beat = self._clock()

    def set_watching(self, watching: bool) -> None:
        """Whether at least one file is being followed."""
        self._watching = watching

    def add_ready_check(self, name: str, check: ReadyCheck) -> None:
        """Add a condition for readiness: ``check()`` returns why the sidecar is not ready, or None."""
        self._checks.append((name, check))

    def alive(self) -> tuple[bool, str]:
        silent = self._clock() - self._last_beat
        if silent > self._stall_after:
            return False, f"follow loop stalled: no progress for {silent:.0f}s"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        alive, reason = self.alive()
        if not alive:
            return False, reason
        if not self._watching:
            return False, "no files are being watched yet"
        for name, check in self._checks:
            try:
                objection = check()
            except Exception as error:  # a broken check must say so on the probe, not kill the server
                objection = f"check failed: {error}"
            if objection is not None:
                return False, f"{name}: {objection}"
        return True, "ready"


class OutageLimit:
    """A ready check that objects only once ``check`` has objected for ``limit`` seconds without a break.

    Agent mode's readiness: a pod should not leave its Service because the log receiver restarted for a
    few seconds (the files buffer meanwhile), but an outage past the limit must show on ``/readyz``.
    The outage starts at the first call that sees ``check`` object, so call it regularly (the agent does
    on every tick), not only from the probe. A ``limit`` of 0 objects at once.
    """

    def __init__(self, check: ReadyCheck, limit: float, clock: Clock = time.monotonic) -> None:
        self._check = check
        self._limit = limit
        self._clock = clock
        self._since: float | None = None

    def __call__(self) -> str | None:
        objection = self._check()
        now = self._clock()
        if objection is None:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        lasted = now - self._since
        if lasted < self._limit:
            return None
        return f"{objection} for {lasted:.0f}s (outage limit {self._limit:g}s)"

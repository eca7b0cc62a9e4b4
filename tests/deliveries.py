"""A stand-in for the metrics a stream sink reports deliveries to: it only adds them up."""

from __future__ import annotations


class CountingDeliveries:
    """Lines and bytes the sink said were delivered (written to stdout), over every pattern."""

    def __init__(self) -> None:
        self.lines = 0
        self.nbytes = 0

    def delivered(self, pattern: str, lines: int, nbytes: int) -> None:
        self.lines += lines
        self.nbytes += nbytes

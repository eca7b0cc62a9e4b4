"""Agent mode's multiline groups belong to one file, by identity, not to the name it is followed under.

After a rename rotation the old generation and its successor share a path. A stack trace still
waiting for its next start line at the end of the old generation is complete as far as that file
goes; the new file's first lines (here a banner, as log4j and logback headers write) are a record of
their own, never the tail of the old trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SidecarFactory
from tests.forward_receiver import ForwardReceiver, as_bytes

TRACE = [
    b"2026-12-01 10:00:00 ERROR checkout failed",
    b"java.lang.IllegalStateException: cart is empty",
    b"\tat com.shop.Cart.checkout(Cart.java:42)",
    b"\tat com.shop.Api.post(Api.java:7)",
]
BANNER = [b"=== shop 1.4.2 log opened on node-7 ===", b"=== java 21.0.2, pid 4242 ==="]
NEXT = [b"2026-12-01 10:00:01 INFO cart restored", b"2026-12-01 10:00:02 INFO checkout ok"]


@pytest.fixture
def receiver() -> Iterator[ForwardReceiver]:
    with ForwardReceiver() as running:
        yield running


def test_last_group_of_a_renamed_generation_never_takes_the_first_lines_of_the_next(
    log_dir: Path, sidecar: SidecarFactory, receiver: ForwardReceiver
) -> None:
    app = log_dir / "app.log"
    app.write_bytes(b"".join(line + b"\n" for line in [b"2026-12-01 09:59:59 INFO started", *TRACE]))
    sc = sidecar(
        app, "--fluentd-host", "127.0.0.1", "--fluentd-port", str(receiver.port), "--flush-interval", "0.1s",
        "--multiline-start", r"^\d{4}-\d\d-\d\d ", "--multiline-timeout", "5s", mode="agent",
    )  # fmt: skip
    receiver.wait_for(1)  # the first record is out: the trace after it has been read and waits for its end
    app.rename(log_dir / "app.log.1")
    app.write_bytes(b"".join(line + b"\n" for line in [*BANNER, *NEXT]))
    receiver.wait_for(3)  # the banner group and the first NEXT line, both closed by a start line
    assert sc.stop() == 0  # the drain flushes the groups still open
    records = sorted(as_bytes(e.record["log"]) for e in receiver.events())
    expected = sorted([b"2026-12-01 09:59:59 INFO started", b"\n".join(TRACE), b"\n".join(BANNER), *NEXT])
    assert records == expected

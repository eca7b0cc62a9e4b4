"""Files that start alike: every generation opens with the same banner or CSV header.

Java and .NET loggers write a startup banner at the head of every file, CSV and TSV logs a header
row; so the first few hundred bytes, which a fingerprint is taken of, are the same in every
generation. A real generation must not be taken for a copy of the file we follow because it begins
with the same bytes, and a file truncated and rewritten with the same banner is new content, read
from its start, not resumed at our old offset in the middle of it.

Banner and header lines are numbered lines of streams the checker is not asked about (``banner``,
``header``), so they count as foreign, never as corrupted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory
from tests.writer import LogWriter

BANNER_TEXT = [
    b"==== shop-checkout 1.4.2 (build 7f3c2a1, 2026-11-30T08:12:44Z) starting ====",
    b"==== runtime: OpenJDK 64-Bit Server VM 21.0.2+13, heap 512m, gc G1 ====",
    b"==== host node-7.eu-west-1.compute.internal, pid 4242, profile production ====",
    b"==== logging: logback 1.5.6, pattern %d{ISO8601} %-5level %logger - %msg ====",
    b"config server.port = 8080",
    b"config server.shutdown = graceful",
    b"config spring.datasource.url = jdbc:postgresql://db.shop.svc:5432/checkout",
    b"config spring.datasource.pool.max = 32",
    b"config cache.carts.ttl = PT30M",
    b"config payments.endpoint = https://payments.shop.svc/v2",
    b"config payments.timeout = PT2S",
    b"config feature.one-click = true",
    b"config tracing.sampler = parentbased_traceidratio 0.05",
    b"config metrics.export = prometheus /actuator/prometheus",
]
BANNER = b"".join(b"banner %08d %s\n" % (i, text) for i, text in enumerate(BANNER_TEXT))
"""A startup banner and configuration dump (~1 KiB): longer than a fingerprint of a file's head should need."""
CSV_HEADER = b"header 00000000 timestamp,level,logger,thread,message\n"
HEADS = {"banner": BANNER, "csv-header": CSV_HEADER}


def start_file(writer: LogWriter, head: bytes) -> None:
    """The application opens a new file: its head first."""
    writer.reopen()
    with writer.path.open("ab") as out:
        out.write(head)


@pytest.mark.parametrize(("kind", "glob"), [("banner", "app.log"), ("csv-header", "app.log"), ("banner", "app.log*")])
def test_generation_starting_with_the_same_head_is_not_taken_for_a_copy(
    kind: str, glob: str, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Two renames while the sidecar is stopped; the middle generation is found beside the file (or, with
    ``app.log*``, by the glob).

    With the CSV header the file held only its header when the sidecar last looked (a young file),
    with the banner it held the banner and 100 lines.
    """
    head = HEADS[kind]
    app = log_dir / "app.log"
    writer = LogWriter(app)
    start_file(writer, head)
    writer.write(0 if kind == "csv-header" else 100)
    sc = sidecar(log_dir / glob)
    sc.wait_for_bytes(app.stat().st_size)
    sc.pause()
    writer.write(200)
    app.rename(log_dir / "app.log.1")
    start_file(writer, head)
    writer.write(300)  # the middle generation: never seen under any name
    (log_dir / "app.log.1").rename(log_dir / "app.log.2")
    app.rename(log_dir / "app.log.1")
    start_file(writer, head)
    writer.write(50)
    sc.resume()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, report.summary()
    assert report.foreign == 3 * head.count(b"\n"), "each file's head comes out once"


@pytest.mark.parametrize("while_", ["stopped", "down"])
def test_file_rewritten_with_the_same_banner_is_read_from_its_start(
    while_: str, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Truncated in place and rewritten past our old offset, by an app that writes its banner first."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    start_file(writer, BANNER)
    writer.write(300)
    sc = sidecar(app)
    sc.wait_for_bytes(app.stat().st_size)
    if while_ == "stopped":
        sc.pause()
    else:
        assert sc.stop() == 0
    before = app.stat().st_size
    writer.truncate()
    with app.open("ab") as out:
        out.write(BANNER)
    writer.write(600)
    assert app.stat().st_size > before
    if while_ == "stopped":
        sc.resume()
    else:
        sc.start()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, report.summary()
    assert report.foreign == 2 * BANNER.count(b"\n")

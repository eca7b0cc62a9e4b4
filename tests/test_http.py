"""The metrics/probe endpoint over real loopback sockets, served from an asyncio loop like in the sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from sidecar.observe.health import Health, OutageLimit
from sidecar.observe.http import MAX_HEAD_BYTES, start_http
from sidecar.observe.metrics import Metrics
from tests.limits import descriptors_exhausted

PATTERN = "/var/log/*.log"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    port: int
    metrics: Metrics
    health: Health

    async def request(self, raw: bytes) -> Reply:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(raw)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return parse_reply(data)

    async def get(self, path: str, *headers: str, method: str = "GET") -> Reply:
        head = "".join(f"{h}\r\n" for h in (f"{method} {path} HTTP/1.1", "Host: test", *headers))
        return await self.request((head + "\r\n").encode())


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, val = line.partition(":")
        headers[name.strip().lower()] = val.strip()
    return Reply(int(status_line.split()[1]), headers, body)


@asynccontextmanager
async def serving(health: Health | None = None, **options: float) -> AsyncIterator[Endpoint]:
    metrics = Metrics("stream", CollectorRegistry())
    health = health if health is not None else Health()
    server = await start_http("127.0.0.1", 0, metrics.registry, health, **options)  # type: ignore[arg-type]
    try:
        yield Endpoint(server.sockets[0].getsockname()[1], metrics, health)
    finally:
        server.close()
        await server.wait_closed()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def ready_health() -> Health:
    health = Health()
    health.set_watching(True)
    return health


def test_unknown_path_returns_404() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            assert (await endpoint.get("/")).status == 404
            assert (await endpoint.get("/metrics/extra")).status == 404

    run(scenario)


def test_methods_other_than_get_and_head_return_405() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            for method in ("POST", "PUT", "DELETE", "OPTIONS"):
                reply = await endpoint.get("/metrics", method=method)
                assert reply.status == 405, method
                assert reply.headers["allow"] == "GET, HEAD"

    run(scenario)


def test_head_returns_the_headers_of_get_without_a_body() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            got = await endpoint.get("/healthz")
            head = await endpoint.get("/healthz", method="HEAD")
            assert head.status == got.status == 200
            assert head.body == b""
            assert head.headers["content-length"] == str(len(got.body))

    run(scenario)


def test_metrics_are_prometheus_text_by_default() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            endpoint.metrics.delivered(PATTERN, 5, 50)
            reply = await endpoint.get("/metrics")
            assert reply.status == 200
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "content-encoding" not in reply.headers
            line = f'sidecar_lines_delivered_total{{mode="stream",pattern="{PATTERN}"}} 5.0'
            assert line.encode() in reply.body.splitlines()

    run(scenario)


def test_metrics_are_openmetrics_when_accept_asks_for_it() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            reply = await endpoint.get("/metrics", accept)
            assert reply.headers["content-type"].startswith("application/openmetrics-text")
            assert reply.body.endswith(b"# EOF\n")

    run(scenario)


def test_metrics_are_gzipped_when_the_client_accepts_gzip() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            reply = await endpoint.get("/metrics", "Accept-Encoding: deflate, gzip;q=0.9")
            assert reply.headers["content-encoding"] == "gzip"
            assert int(reply.headers["content-length"]) == len(reply.body)
            assert b"sidecar_build_info" in gzip.decompress(reply.body)

    run(scenario)


def test_metrics_can_be_restricted_by_name() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            reply = await endpoint.get("/metrics?name[]=sidecar_files_watched")
            samples = [line for line in reply.body.splitlines() if not line.startswith(b"#")]
            assert samples == [b'sidecar_files_watched{mode="stream"} 0.0']

    run(scenario)


def test_a_standard_http_client_reads_metrics() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:

            def fetch() -> bytes:
                url = f"http://127.0.0.1:{endpoint.port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body: bytes = response.read()
                    return body

            assert b"process_resident_memory_bytes" in await asyncio.to_thread(fetch)

    run(scenario)


def test_healthz_fails_when_the_follow_loop_stops_beating() -> None:
    now = [0.0]
    health = Health(stall_after=30, clock=lambda: now[0])

    async def scenario() -> None:
        async with serving(health) as endpoint:
            assert (await endpoint.get("/healthz")).status == 200
            now[0] = 31
            reply = await endpoint.get("/healthz")
            assert reply.status == 503
            assert reply.body == b"follow loop stalled: no progress for 31s\n"
            health.beat()
            assert (await endpoint.get("/healthz")).status == 200

    run(scenario)


def test_readyz_flips_when_a_ready_check_fails() -> None:
    failing: list[str] = []
    health = ready_health()
    health.add_ready_check("forward", lambda: failing[0] if failing else None)

    async def scenario() -> None:
        async with serving(health) as endpoint:
            assert (await endpoint.get("/readyz")).status == 200
            failing.append("no receiver connected for 90s")
            reply = await endpoint.get("/readyz")
            assert reply.status == 503
            assert reply.body == b"forward: no receiver connected for 90s\n"
            failing.clear()
            assert (await endpoint.get("/readyz")).status == 200

    run(scenario)


def test_readyz_reports_a_ready_check_that_raises() -> None:
    def broken() -> str | None:
        raise RuntimeError("pool gone")

    health = ready_health()
    health.add_ready_check("receiver", broken)

    async def scenario() -> None:
        async with serving(health) as endpoint:
            reply = await endpoint.get("/readyz")
            assert (reply.status, reply.body) == (503, b"receiver: check failed: pool gone\n")

    run(scenario)


def test_outage_limit_objects_only_once_the_outage_lasted_the_limit_without_a_break() -> None:
    now = [0.0]
    down: list[str] = ["receiver refused"]
    outage = OutageLimit(lambda: down[0] if down else None, limit=60, clock=lambda: now[0])
    assert outage() is None  # the outage starts here
    now[0] = 59.9
    assert outage() is None
    now[0] = 61
    assert outage() == "receiver refused for 61s (outage limit 60s)"
    down.clear()
    assert outage() is None
    down.append("receiver refused")
    now[0] = 100
    assert outage() is None  # a new outage: its clock starts again


def test_outage_limit_zero_objects_at_once() -> None:
    assert OutageLimit(lambda: "down", limit=0, clock=lambda: 5.0)() == "down for 0s (outage limit 0s)"


def test_readyz_is_503_while_the_follow_loop_is_stalled() -> None:
    now = [0.0]
    health = Health(stall_after=5, clock=lambda: now[0])
    health.set_watching(True)

    async def scenario() -> None:
        async with serving(health) as endpoint:
            now[0] = 6
            reply = await endpoint.get("/readyz")
            assert (reply.status, reply.body) == (503, b"follow loop stalled: no progress for 6s\n")

    run(scenario)


def test_readyz_is_503_until_files_are_watched() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            reply = await endpoint.get("/readyz")
            assert (reply.status, reply.body) == (503, b"no files are being watched yet\n")
            endpoint.health.set_watching(True)
            assert (await endpoint.get("/readyz")).status == 200

    run(scenario)


def test_a_silent_client_does_not_block_a_concurrent_scrape() -> None:
    async def scenario() -> None:
        async with serving(read_timeout=10) as endpoint:
            _, silent = await asyncio.open_connection("127.0.0.1", endpoint.port)
            started = time.monotonic()
            reply = await endpoint.get("/metrics")
            assert reply.status == 200
            assert time.monotonic() - started < 2
            silent.close()

    run(scenario)


def test_a_silent_client_is_answered_408_after_the_read_timeout() -> None:
    async def scenario() -> None:
        async with serving(read_timeout=0.3) as endpoint:
            reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
            writer.write(b"GET /metr")
            reply = parse_reply(await reader.read())
            assert reply.status == 408
            writer.close()

    run(scenario)


def test_an_oversized_request_head_returns_431() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            padding = "X-Pad: " + "a" * MAX_HEAD_BYTES
            reply = await endpoint.get("/metrics", padding)
            assert reply.status == 431

    run(scenario)


def test_idle_connections_over_the_limit_make_way_for_new_ones_oldest_first() -> None:
    async def scenario() -> None:
        async with serving(max_connections=2) as endpoint:
            idle = [await asyncio.open_connection("127.0.0.1", endpoint.port) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert (await endpoint.get("/metrics")).status == 200
            oldest, newer = idle
            assert await asyncio.wait_for(oldest[0].read(), 5) == b""
            newer[1].write(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert parse_reply(await newer[0].read()).status == 200

    run(scenario)


def test_probes_keep_answering_while_strangers_hold_and_reopen_idle_connections() -> None:
    """24 clients that connect and send nothing, reconnecting whenever they are cut off, cannot make a
    probe fail (before: 16 of them took every place for the 5 s head timeout, and probes got 503)."""

    async def scenario() -> None:
        async with serving(read_timeout=5) as endpoint:

            async def stranger() -> None:
                while True:
                    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
                    with contextlib.suppress(ConnectionError):
                        await reader.read()
                    writer.close()

            strangers = [asyncio.create_task(stranger()) for _ in range(24)]
            await asyncio.sleep(0.2)
            statuses = []
            for _ in range(40):
                statuses.append((await endpoint.get("/healthz")).status)
                await asyncio.sleep(0.01)
            for task in strangers:
                task.cancel()
            assert statuses == [200] * 40

    run(scenario)


class _Huge:
    """A collector whose exposition is bigger than any socket buffer, so a client that does not read
    keeps its answer waiting."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("huge", "x" * (32 * 1024 * 1024), value=1.0)


def test_scrapes_over_the_limit_get_503_while_probes_are_still_answered() -> None:
    async def scenario() -> None:
        async with serving(max_connections=1, read_timeout=20) as endpoint:
            endpoint.metrics.registry.register(_Huge())
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(("127.0.0.1", endpoint.port))
            stuck.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            for _ in range(200):
                reply = await endpoint.get("/metrics")
                if reply.status == 503:
                    break
                await asyncio.sleep(0.05)
            assert (reply.status, reply.body) == (503, b"too many connections\n")
            assert (await endpoint.get("/healthz")).status == 200
            assert (await endpoint.get("/readyz")).status == 503  # answered: not watching files in this test
            stuck.close()
            for _ in range(200):
                reply = await endpoint.get("/metrics")
                if reply.status != 503:
                    break
                await asyncio.sleep(0.05)
            assert reply.status == 200

    run(scenario)


_CLIENT = """
import socket, sys
for line in sys.stdin:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as sock:
            sock.sendall(("GET " + line.strip() + " HTTP/1.1\\r\\n\\r\\n").encode())
            reply = b"".join(iter(lambda: sock.recv(65536), b""))
        print(reply.split(b" ")[1].decode(), flush=True)
    except OSError as error:
        print(type(error).__name__, flush=True)
"""
"""Requests one path per line of stdin and prints each status: a client that needs none of our descriptors."""


def test_out_of_descriptors_the_endpoint_still_answers_and_counts_it() -> None:
    async def scenario() -> None:
        async with serving(ready_health()) as endpoint:
            client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(endpoint.port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert client.stdin is not None
            assert client.stdout is not None
            statuses = []
            await asyncio.to_thread(lambda: None)  # its thread and modules, loaded while files can be opened
            with descriptors_exhausted():
                for path in ("/healthz", "/metrics", "/readyz"):
                    client.stdin.write(path + "\n")
                    client.stdin.flush()
                    statuses.append(await asyncio.to_thread(client.stdout.readline))
            client.stdin.close()
            assert client.wait(timeout=10) == 0
            assert statuses == ["200\n"] * 3
            body = (await endpoint.get("/metrics")).body
            assert b'sidecar_http_accept_errors_total{reason="EMFILE"} 3.0' in body

    run(scenario)


def test_a_malformed_request_line_returns_400() -> None:
    async def scenario() -> None:
        async with serving() as endpoint:
            assert (await endpoint.request(b"hello\r\n\r\n")).status == 400

    run(scenario)

"""The ``/metrics``, ``/healthz`` and ``/readyz`` endpoint, served inside the sidecar's own event loop.

A thread-based server (``prometheus_client.start_http_server``) would answer probes even while the
loop is wedged, which hides exactly the failure the probes exist to catch; serving from the loop makes
a probe answer proof that the loop turns. Because the loop is also the log pipeline, no client may hold
it up: every read and write has a deadline, a request head is at most :data:`MAX_HEAD_BYTES`, and at
most ``max_connections`` are served at once (more are turned away with 503). One request per
connection (``Connection: close``) keeps the protocol small: scrapers and the kubelet expect nothing more.
"""

from __future__ import annotations

import asyncio
import gzip
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from sidecar.observe.health import Health

MAX_HEAD_BYTES = 8 * 1024
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 16
TEXT = "text/plain; charset=utf-8"
ALLOWED_METHODS = ("GET", "HEAD")


class _BadRequest(Exception):
    """The request head cannot be parsed."""


@dataclass(slots=True)
class _Response:
    status: HTTPStatus
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: HTTPStatus, message: str) -> _Response:
        return cls(status, (message + "\n").encode(), [("Content-Type", TEXT)])

    def encode(self, include_body: bool) -> bytes:
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close", "", ""]
        head = "\r\n".join(lines).encode("latin-1")
        return head + self.body if include_body else head


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def _parse_head(head: bytes) -> _Request:
    """Request line and headers; header names are lower-cased, repeated headers joined with commas."""
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(request_line)
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(line)
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    try:
        url = urlsplit(target)
    except ValueError as error:
        raise _BadRequest(target) from error
    return _Request(method, url.path, parse_qs(url.query), headers)


class _Server:
    """One instance per listening socket; ``serve`` runs once per connection."""

    def __init__(self, registry: CollectorRegistry, health: Health, read_timeout: float, max_connections: int) -> None:
        self._registry = registry
        self._health = health
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._active = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._active >= self._max_connections:
                await self._send(writer, _Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections"))
                return
            self._active += 1
            try:
                await self._answer(reader, writer)
            finally:
                self._active -= 1
        except (ConnectionError, TimeoutError):
            writer.transport.abort()
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._read_timeout)
            request = _parse_head(head[:-4])
        except TimeoutError:
            await self._send(writer, _Response.text(HTTPStatus.REQUEST_TIMEOUT, "request head too slow"))
            return
        except asyncio.LimitOverrunError:
            too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            await self._send(writer, _Response.text(too_large, f"request head over {MAX_HEAD_BYTES} bytes"))
            return
        except asyncio.IncompleteReadError:
            return
        except _BadRequest:
            await self._send(writer, _Response.text(HTTPStatus.BAD_REQUEST, "malformed request"))
            return
        await self._send(writer, self._route(request), include_body=request.method != "HEAD")

    def _route(self, request: _Request) -> _Response:
        routes = {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz}
        handler = routes.get(request.path)
        if handler is None:
            return _Response.text(HTTPStatus.NOT_FOUND, "not found: try /metrics, /healthz or /readyz")
        if request.method not in ALLOWED_METHODS:
            response = _Response.text(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed")
            response.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            return response
        return handler(request)

    def _metrics(self, request: _Request) -> _Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        names = request.query.get("name[]")
        body = encoder(self._registry.restricted_registry(names) if names else self._registry)
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        return _Response(HTTPStatus.OK, body, headers)

    def _healthz(self, request: _Request) -> _Response:
        return self._probe(*self._health.alive())

    def _readyz(self, request: _Request) -> _Response:
        return self._probe(*self._health.ready())

    @staticmethod
    def _probe(ok: bool, reason: str) -> _Response:
        return _Response.text(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, reason)

    async def _send(self, writer: asyncio.StreamWriter, response: _Response, include_body: bool = True) -> None:
        writer.write(response.encode(include_body))
        # A client that does not read its answer must not keep the connection slot forever.
        await asyncio.wait_for(writer.drain(), self._read_timeout)
        with suppress(OSError):
            writer.write_eof()


async def start_http(
    address: str,
    port: int,
    registry: CollectorRegistry,
    health: Health,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> asyncio.Server:
    """Listen on ``address:port`` (port 0 picks a free one: read it from ``server.sockets``).

    The caller owns the returned server: ``server.close()`` then ``await server.wait_closed()``.
    """
    server = _Server(registry, health, read_timeout, max_connections)
    return await asyncio.start_server(server.serve, address, port, limit=MAX_HEAD_BYTES)

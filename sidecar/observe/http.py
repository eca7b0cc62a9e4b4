"""The ``/metrics``, ``/healthz`` and ``/readyz`` endpoint, served inside the sidecar's own event loop.

A thread-based server (``prometheus_client.start_http_server``) would answer probes even while the
loop is wedged, which hides exactly the failure the probes exist to catch; serving from the loop makes
a probe answer proof that the loop turns. Because the loop is also the log pipeline, no client may hold
it up: every read and write has a deadline and a request head is at most :data:`MAX_HEAD_BYTES`. One
request per connection (``Connection: close``) keeps the protocol small: scrapers and the kubelet
expect nothing more.

A probe must get through whatever other clients do, or the kubelet kills a healthy pod. So idle
connections cannot crowd it out: at most ``max_connections`` may be waiting for their request head, and
a new one closes the one that has waited longest (a client that connects and sends nothing holds a
place only until somebody else needs it). Answers to ``/metrics`` are limited to ``max_connections``
at once (more get 503); probe answers are a few bytes and never wait for a place.

When the process runs out of descriptors (``ulimit -n`` too low for the files followed), one spare
descriptor kept for the purpose is given up to accept a connection, so the endpoint still answers and
says why; the failure is logged once and counted in ``sidecar_http_accept_errors_total{reason}``.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import os
import resource
import socket
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder, gzip_accepted

from sidecar.log import get_logger
from sidecar.observe.health import Health

log = get_logger(__name__)

MAX_HEAD_BYTES = 8 * 1024
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 16
TEXT = "text/plain; charset=utf-8"
ALLOWED_METHODS = ("GET", "HEAD")
PROBES = frozenset({"/healthz", "/readyz"})
ACCEPT_RETRY = 0.25
"""Out of descriptors with the spare in use: look at the listening socket again this much later."""
LISTEN_BACKLOG = 128
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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


class HttpServer:
    """What :func:`start_http` returns: accepts connections and answers each one's request (module docstring)."""

    def __init__(self, registry: CollectorRegistry, health: Health, read_timeout: float, max_connections: int,
                 sockets: list[socket.socket]) -> None:
        self._registry = registry
        self._health = health
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self.sockets = sockets
        self._accept_errors = Counter("sidecar_http_accept_errors", "Connections the metrics endpoint could not "
                                      "accept at once, by errno (EMFILE: out of descriptors).", ("reason",),
                                      registry=registry)
        self._accept_errors.labels(reason="EMFILE")
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._answering = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._spare: int | None = None
        self._warned = False
        self._closed = False

    # -- connections ------------------------------------------------------------------------------

    def listen(self) -> None:
        self._take_spare()
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and cut the connections still open."""
        loop = asyncio.get_running_loop()
        self._closed = True
        for sock in self.sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        for task in self._tasks:
            task.cancel()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._max_connections):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    continue  # the client gave up while it waited in the backlog
                spared = self._accept_on_spare(sock, exc)
                if spared is None:
                    self._pause(sock)
                else:
                    self._start(spared)
                return  # out of descriptors: accept() fails even with nobody waiting, so stop here
            self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept_on_spare(self, sock: socket.socket, exc: OSError) -> socket.socket | None:
        """Out of descriptors: give up the spare one for this connection (None when it is in use)."""
        self._accept_errors.labels(reason=errno.errorcode.get(exc.errno or 0, "unknown")).inc()
        if not self._warned:
            self._warned = True
            log.warning("http_out_of_descriptors", error=exc.strerror,
                        limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                        hint="raise the open-files limit (ulimit -n) or follow fewer files; "
                             "probes and scrapes are answered one at a time meanwhile")
        if self._spare is None:
            return None
        os.close(self._spare)
        self._spare = None
        try:
            return sock.accept()[0]
        except OSError:
            self._take_spare()
            return None

    def _pause(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        loop.call_later(ACCEPT_RETRY, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._take_spare()
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _take_spare(self) -> None:
        if self._spare is None and not self._closed:
            with suppress(OSError):
                self._spare = os.dup(self.sockets[0].fileno())

    async def _connection(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_HEAD_BYTES)
        except OSError:
            conn.close()
            return
        try:
            await self.serve(reader, writer)
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
            self._take_spare()

    # -- requests ---------------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._read_request(reader, writer)
            if request is None:
                return
            if request.path in PROBES:
                await self._send(writer, self._route(request), include_body=request.method != "HEAD")
                return
            if self._answering >= self._max_connections:
                await self._send(writer, _Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections"))
                return
            self._answering += 1
            try:
                await self._send(writer, self._route(request), include_body=request.method != "HEAD")
            finally:
                self._answering -= 1
        except (ConnectionError, TimeoutError):
            writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
        """The request head, parsed; None when the connection was answered with an error or closed."""
        if len(self._waiting) >= self._max_connections:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        self._waiting[writer] = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._read_timeout)
            return _parse_head(head[:-4])
        except TimeoutError:
            await self._send(writer, _Response.text(HTTPStatus.REQUEST_TIMEOUT, "request head too slow"))
        except asyncio.LimitOverrunError:
            too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            await self._send(writer, _Response.text(too_large, f"request head over {MAX_HEAD_BYTES} bytes"))
        except asyncio.IncompleteReadError:
            pass
        except _BadRequest:
            await self._send(writer, _Response.text(HTTPStatus.BAD_REQUEST, "malformed request"))
        finally:
            self._waiting.pop(writer, None)
        return None

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
) -> HttpServer:
    """Listen on ``address:port`` (port 0 picks a free one: read it from ``server.sockets``).

    The caller owns the returned server: ``server.close()`` then ``await server.wait_closed()``.
    """
    sockets = await _listening_sockets(address, port)
    server = HttpServer(registry, health, read_timeout, max_connections, sockets)
    server.listen()
    return server


async def _listening_sockets(address: str, port: int) -> list[socket.socket]:
    """One non-blocking listening socket per address ``address`` resolves to (as asyncio's servers do)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets

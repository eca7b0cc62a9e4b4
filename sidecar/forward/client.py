"""One asyncio connection to one Forward receiver (Fluentd / Fluent Bit ``in_forward``).

A :class:`Connection` opens TCP (optionally TLS), does the shared-key handshake when a key is set, and
then pipelines chunks: :meth:`Connection.send` writes a message and returns a future that completes
when the receiver acknowledges that chunk id. At most ``max_in_flight`` chunks wait for acks at once,
so a slow receiver slows the sender instead of growing memory. Any trouble — connection lost, an ack
missing after ``ack_timeout``, a reply that is not an ack — fails the *whole* connection and every
pending future with a :class:`ForwardError` naming the receiver: after such an event the byte stream's
state is unknown, so the only safe move is to reconnect and resend (what
:class:`sidecar.forward.pool.ForwardPool` does). Retrying and choosing receivers is not this module's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass, field

import msgpack

from sidecar.errors import ConfigError, ForwardError, HandshakeError
from sidecar.forward.protocol import (
    Helo,
    new_salt,
    new_unpacker,
    pack_ping,
    parse_ack,
    parse_helo,
    verify_pong,
)

DEFAULT_PORT = 24224


@dataclass(frozen=True, slots=True)
class Receiver:
    """Where to send: a host name (resolved again on every connect, so DNS changes are followed) and port."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Receiver:
        """``host``, ``host:port`` or ``[v6addr]:port``; :class:`ConfigError` when malformed."""
        text = text.strip()
        host, port = text, str(DEFAULT_PORT)
        if text.startswith("["):
            end = text.find("]")
            if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
                raise ConfigError(f"receiver {text!r}: expected [ipv6]:port")
            host, port = text[1:end], text[end + 2 :] or port
        elif text.count(":") == 1:
            host, port = text.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"receiver {text!r}: expected host:port with a port between 1 and 65535")
        return cls(host, int(port))


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS towards receivers. Verification is on unless ``verify`` is False (never the default)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    server_hostname: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context: the system CAs, or only ``ca_file``; a client certificate when given."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"TLS files cannot be loaded: {error}; check --tls-ca/--tls-cert/--tls-key") from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    """How to talk to receivers; shared by :class:`Connection` and the pool."""

    tls: TlsOptions | None = None
    #: Shared key for the HELO/PING/PONG handshake; None skips the handshake.
    shared_key: str | None = None
    #: Our name in the PING (``self_hostname``); the receiver logs it and hashes it into the digest.
    self_hostname: str = field(default_factory=socket.gethostname)
    username: str = ""
    password: str = ""
    #: Ask for ``{"ack": chunk}`` and resend until it comes (at-least-once). Off: fire and forget.
    require_ack: bool = True
    #: Seconds to wait for a chunk's ack before the connection is declared broken and the chunk resent.
    ack_timeout: float = 30.0
    #: Seconds for TCP connect + TLS + handshake.
    connect_timeout: float = 10.0
    #: Chunks written but not yet acknowledged, per connection.
    max_in_flight: int = 4
    #: Reconnect backoff: first delay and cap, in seconds (exponential, with jitter).
    retry_min: float = 0.5
    retry_max: float = 30.0


class Connection:
    """A connected, authenticated conversation with one receiver; see the module docstring."""

    def __init__(self, receiver: Receiver, options: ForwardOptions) -> None:
        self.receiver = receiver
        self._options = options
        self._slots = asyncio.Semaphore(options.max_in_flight)
        self._pending: dict[str, tuple[asyncio.Future[None], asyncio.TimerHandle]] = {}
        self._failure: ForwardError | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.server_hostname: str | None = None

    @property
    def closed(self) -> bool:
        """True once the connection failed or was closed; it is never reused after that."""
        return self._failure is not None or self._writer is None

    @property
    def failure(self) -> ForwardError | None:
        """Why the connection ended, if it did."""
        return self._failure

    @property
    def in_flight(self) -> int:
        """Chunks written and still waiting for their ack."""
        return len(self._pending)

    async def open(self) -> None:
        """Connect, TLS, handshake; :class:`ForwardError` / :class:`HandshakeError` naming the receiver."""
        tls = self._options.tls
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.receiver.host,
                    self.receiver.port,
                    ssl=tls.context() if tls else None,
                    server_hostname=(tls.server_hostname or self.receiver.host) if tls else None,
                ),
                self._options.connect_timeout,
            )
        except TimeoutError:
            raise ForwardError(
                f"receiver {self.receiver}: no connection within {self._options.connect_timeout:g}s"
            ) from None
        except ssl.SSLError as error:
            raise ForwardError(f"receiver {self.receiver}: TLS failed: {error.reason or error}") from None
        except OSError as error:
            raise ForwardError(f"receiver {self.receiver}: cannot connect: {_os_reason(error)}") from None
        unpacker = new_unpacker()
        if self._options.shared_key is not None:
            try:
                await asyncio.wait_for(
                    self._handshake(reader, writer, unpacker, self._options.shared_key),
                    self._options.connect_timeout,
                )
            except (HandshakeError, TimeoutError, OSError) as error:
                writer.transport.abort()
                reason = str(error)
                if isinstance(error, TimeoutError):
                    reason = (
                        f"no handshake reply within {self._options.connect_timeout:g}s;"
                        " is a shared key configured on the receiver?"
                    )
                raise HandshakeError(f"receiver {self.receiver}: {reason}") from None
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_replies(reader, unpacker))

    async def send(self, message: bytes, chunk_id: str | None) -> asyncio.Future[None]:
        """Write ``message``; return a future done when chunk ``chunk_id`` is acknowledged.

        Waits first while ``max_in_flight`` chunks are unacknowledged (backpressure). With
        ``chunk_id=None`` no ack is expected and the returned future is already done once the bytes are
        handed to the kernel. Raises :class:`ForwardError` when the connection is (or becomes) broken;
        the future fails with one when it breaks before the ack arrives.
        """
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        future.add_done_callback(lambda _: self._slots.release())
        if self._failure is not None or self._writer is None:
            future.cancel()
            raise self._failure or ForwardError(f"receiver {self.receiver}: connection is not open")
        if chunk_id is not None:
            timer = loop.call_later(self._options.ack_timeout, self._ack_timed_out, chunk_id)
            self._pending[chunk_id] = (future, timer)
        try:
            self._writer.write(message)
            await asyncio.wait_for(self._writer.drain(), self._options.ack_timeout)
        except (OSError, TimeoutError) as error:
            reason = "write timed out" if isinstance(error, TimeoutError) else _os_reason(error)
            self._fail(f"write failed: {reason}")
        if self._failure is not None:
            if not future.done():
                future.cancel()
            raise self._failure
        if chunk_id is None:
            future.set_result(None)
        return future

    async def close(self) -> None:
        """Close now; chunks still waiting for acks fail with :class:`ForwardError`."""
        writer = self._writer
        self._fail("connection closed by the sender")
        if writer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    # --- internals -----------------------------------------------------------------------------------

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        unpacker: msgpack.Unpacker,
        shared_key: str,
    ) -> None:
        helo: Helo = parse_helo(await _read_one(reader, unpacker))
        salt = new_salt()
        options = self._options
        writer.write(pack_ping(helo, options.self_hostname, shared_key, salt, options.username, options.password))
        await writer.drain()
        self.server_hostname = verify_pong(await _read_one(reader, unpacker), helo, salt, shared_key)

    async def _read_replies(self, reader: asyncio.StreamReader, unpacker: msgpack.Unpacker) -> None:
        """Match acks to pending chunks until the connection ends; any anomaly fails the connection."""
        while self._failure is None:
            try:
                data = await reader.read(65536)
            except OSError as error:
                self._fail(f"connection lost: {_os_reason(error)}")
                return
            if not data:
                self._fail("receiver closed the connection")
                return
            unpacker.feed(data)
            try:
                for reply in unpacker:
                    self._on_reply(reply)
            except (ValueError, msgpack.UnpackException):
                self._fail("receiver sent bytes that are not msgpack")
            except ForwardError as error:
                self._fail(str(error), type(error))

    def _on_reply(self, reply: object) -> None:
        if isinstance(reply, list) and reply and reply[0] == "HELO":
            raise HandshakeError("receiver requires a shared key (it sent HELO); set --shared-key")
        chunk = parse_ack(reply)
        entry = self._pending.pop(chunk, None)
        if entry is None:
            return  # an ack for a chunk we no longer wait for is harmless under at-least-once
        future, timer = entry
        timer.cancel()
        if not future.done():
            future.set_result(None)

    def _ack_timed_out(self, chunk_id: str) -> None:
        if chunk_id in self._pending:
            self._fail(f"no ack for chunk {chunk_id} within {self._options.ack_timeout:g}s")

    def _fail(self, reason: str, kind: type[ForwardError] = ForwardError) -> None:
        """Break the connection: remember why, fail every pending chunk, drop the socket."""
        if self._failure is None:
            self._failure = kind(f"receiver {self.receiver}: {reason}")
        for future, timer in self._pending.values():
            timer.cancel()
            if not future.done():
                future.set_exception(self._failure)
                future.exception()  # retrieved here: only the pool's awaiters care, not the loop's logger
        self._pending.clear()
        if self._writer is not None:
            self._writer.transport.abort()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()


async def _read_one(reader: asyncio.StreamReader, unpacker: msgpack.Unpacker) -> object:
    """The next msgpack object from ``reader`` (handshake phase)."""
    while True:
        try:
            return next(unpacker)
        except StopIteration:
            pass
        except (ValueError, msgpack.UnpackException):
            raise HandshakeError("receiver sent bytes that are not msgpack during the handshake") from None
        data = await reader.read(65536)
        if not data:
            raise HandshakeError("receiver closed the connection during the handshake")
        unpacker.feed(data)


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__

"""A spec-complete Forward-protocol receiver to test senders against, like Fluentd's ``in_forward``.

It accepts every event mode of Forward Protocol v1 — Message ``[tag, time, record, option?]``, Forward
``[tag, [[time, record], ...], option?]``, PackedForward ``[tag, bin|str entries, option?]`` and
CompressedPackedForward (``compressed: "gzip"``, any number of gzip members) — with EventTime (ext 0),
integer or float times; checks the ``size`` option; answers ``{"ack": chunk}``; and runs the shared-key
handshake (HELO → PING → PONG, optionally with username/password). It can misbehave on purpose
(``ack_mode`` "never" / "garbage", ``close_after``) for failure tests, and like Fluent Bit's in_forward
(v4.2.8 and before) with ``buffer_chunk_size``: it decompresses a CompressedPackedForward chunk in pieces
of that many bytes, drops the records that straddle two pieces and acknowledges the chunk anyway. (Real
Fluent Bit loses even more when a piece boundary falls where it starts a new chunk of its own.)

The handshake digests are computed here with hashlib directly rather than with
``sidecar.forward.protocol``, so a mistake there cannot cancel itself out in tests.

The server runs on its own event loop in a background thread, so plain synchronous tests and tests
that start the sidecar as a subprocess can both use it::

    with ForwardReceiver() as receiver:
        ...send to 127.0.0.1:receiver.port...
        events = receiver.wait_for(3)

Run ``python tests/forward_receiver.py --port 24224`` to print received events as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import hashlib
import ipaddress
import json
import os
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

AckMode = Literal["ack", "never", "garbage"]
Mode = Literal["Message", "Forward", "PackedForward", "CompressedPackedForward"]

#: Bytes that can never start a msgpack object: what ``ack_mode="garbage"`` replies.
GARBAGE = b"\xc1\xc1\xc1\xc1"


class ProtocolViolation(ValueError):
    """What a sender sent is not valid Forward protocol."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event as the receiver understood it."""

    tag: str
    time_ns: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded event message: its mode, entries ``(time_ns, record)``, and option map."""

    mode: Mode
    tag: str
    entries: list[tuple[int, dict[str, Any]]]
    option: dict[str, Any] | None
    gzip_members: int = 0
    #: Records dropped for straddling two decompression pieces (``buffer_chunk_size``).
    dropped: int = 0

    def events(self) -> list[Event]:
        return [Event(self.tag, t, record) for t, record in self.entries]


@dataclass(frozen=True, slots=True)
class Ping:
    """A PING the receiver got, and whether it accepted it."""

    hostname: str
    username: str
    accepted: bool
    reason: str


def new_unpacker() -> msgpack.Unpacker:
    """Decode like the receiver: str as str (non-UTF-8 bytes kept via surrogateescape), ext as ExtType."""
    return msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", strict_map_key=False)


def read_objects(data: bytes) -> list[Any]:
    """Every msgpack object in ``data`` (a capture file)."""
    unpacker = new_unpacker()
    unpacker.feed(data)
    return list(unpacker)


def as_bytes(value: object) -> bytes:
    """The raw bytes of a msgpack str or bin."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ProtocolViolation(f"expected str or bin, got {type(value).__name__}")


def decode_time(value: object) -> int:
    """Nanoseconds since the epoch from an EventTime ext, an integer or a float."""
    if isinstance(value, msgpack.ExtType):
        if value.code != 0 or len(value.data) != 8:
            raise ProtocolViolation(f"time ext type {value.code} with {len(value.data)} bytes")
        seconds, nanoseconds = struct.unpack(">II", value.data)
        return int(seconds) * 1_000_000_000 + int(nanoseconds)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolViolation(f"time is a {type(value).__name__}")
    if isinstance(value, int):
        return value * 1_000_000_000
    return round(value * 1e9)


def _entry(value: object) -> tuple[int, dict[str, Any]]:
    if not (isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], dict)):
        raise ProtocolViolation(f"entry is not [time, record]: {value!r:.80}")
    return decode_time(value[0]), value[1]


def count_gzip_members(data: bytes) -> int:
    """How many gzip members are concatenated in ``data`` (the spec allows several)."""
    members = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        inflater.decompress(data)
        if not inflater.eof:
            raise ProtocolViolation("truncated gzip member")
        members += 1
        data = inflater.unused_data
    return members


def _entries_within_pieces(payload: bytes, piece_size: int | None) -> tuple[list[Any], int]:
    """The msgpack objects of ``payload`` that lie within one ``piece_size`` piece, and how many do not."""
    unpacker = new_unpacker()
    unpacker.feed(payload)
    kept: list[Any] = []
    dropped = 0
    start = 0
    for item in unpacker:
        end = unpacker.tell()
        if piece_size is None or start // piece_size == (end - 1) // piece_size:
            kept.append(item)
        else:
            dropped += 1
        start = end
    return kept, dropped


def decode_message(message: object, piece_size: int | None = None) -> Message:
    """Decode one event message of any mode; :class:`ProtocolViolation` when it is none.

    ``piece_size`` decompresses like Fluent Bit's ``Buffer_Chunk_Size`` (see the module docstring).
    """
    if not (isinstance(message, list) and 2 <= len(message) <= 4 and isinstance(message[0], str)):
        raise ProtocolViolation(f"not an event message: {message!r:.80}")
    tag, body = message[0], message[1]
    members = dropped = 0
    if isinstance(body, list):
        mode: Mode = "Forward"
        option = _option(message, 2)
        entries = [_entry(item) for item in body]
    elif isinstance(body, bytes | str):
        option = _option(message, 2)
        payload = as_bytes(body)
        mode = "PackedForward"
        if option is not None and option.get("compressed") == "gzip":
            mode = "CompressedPackedForward"
            members = count_gzip_members(payload)
            items, dropped = _entries_within_pieces(gzip.decompress(payload), piece_size)
        else:
            items = read_objects(payload)
        entries = [_entry(item) for item in items]
    else:
        if len(message) < 3 or not isinstance(message[2], dict):
            raise ProtocolViolation(f"Message mode without a record: {message!r:.80}")
        mode = "Message"
        option = _option(message, 3)
        entries = [(decode_time(body), message[2])]
    if option is not None and "size" in option and option["size"] != len(entries) + dropped:
        raise ProtocolViolation(f"option size {option['size']} but {len(entries) + dropped} entries")
    return Message(mode, tag, entries, option, members, dropped)


def _option(message: list[Any], index: int) -> dict[str, Any] | None:
    if len(message) <= index:
        return None
    if len(message) > index + 1 or not isinstance(message[index], dict):
        raise ProtocolViolation(f"bad option map: {message!r:.80}")
    option: dict[str, Any] = message[index]
    return option


def _sha512_hex(*parts: bytes) -> str:
    return hashlib.sha512(b"".join(parts)).hexdigest()


@dataclass
class _Record:
    """Everything received, guarded by one condition so test threads can wait on it."""

    condition: threading.Condition = field(default_factory=threading.Condition)
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pings: list[Ping] = field(default_factory=list)
    connections: int = 0
    disconnects: int = 0


class ForwardReceiver:
    """The receiver; see the module docstring. ``port=0`` picks a free port, kept across restarts."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        shared_key: str | None = None,
        hostname: str = "aggregator",
        users: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        ack_mode: AckMode = "ack",
        close_after: int | None = None,
        keepalive: bool = True,
        nonce: bytes | None = None,
        buffer_chunk_size: int | None = None,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.shared_key = shared_key
        self.hostname = hostname
        self.users = users
        self.tls = tls
        #: May be changed while running (e.g. stop acking, then resume).
        self.ack_mode: AckMode = ack_mode
        #: Handle this many event messages, then drop the next one unrecorded and close its connection
        #: (once), like a receiver crashing mid-stream.
        self.close_after = close_after
        self.keepalive = keepalive
        #: Fixed HELO nonce (to replay captured handshakes); random per connection when None.
        self.nonce = nonce
        #: Decompress in pieces of this many bytes, like Fluent Bit (see the module docstring).
        self.buffer_chunk_size = buffer_chunk_size
        self._on_message = on_message
        self._record = _Record()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> ForwardReceiver:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again, on the same port after a :meth:`stop`)."""
        if self._thread is not None:
            raise RuntimeError("receiver already running")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port, ssl=self.tls, reuse_address=True)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as error:
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"forward-receiver-{self.port}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Stop listening and drop every connection at once (as a crashing receiver would)."""
        if self._thread is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # --- what was received ----------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """Decoded event messages in arrival order."""
        with self._record.condition:
            return list(self._record.messages)

    @property
    def errors(self) -> list[str]:
        """Protocol violations seen (each also closed its connection)."""
        with self._record.condition:
            return list(self._record.errors)

    @property
    def pings(self) -> list[Ping]:
        """Handshake attempts, accepted or refused."""
        with self._record.condition:
            return list(self._record.pings)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._record.condition:
            return self._record.connections

    @property
    def disconnects(self) -> int:
        """Connections that ended so far (everything they sent has been handled)."""
        with self._record.condition:
            return self._record.disconnects

    def events(self) -> list[Event]:
        """Every event received, in order."""
        return [event for message in self.messages for event in message.events()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Event]:
        """Block until at least ``count`` events arrived; TimeoutError naming what did arrive."""
        deadline = time.monotonic() + timeout
        with self._record.condition:
            while True:
                events = [e for m in self._record.messages for e in m.events()]
                if len(events) >= count:
                    return events
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(events)} of {count} events after {timeout}s; errors: {self._record.errors}"
                    )
                self._record.condition.wait(left)

    def wait_until(self, predicate: Callable[[ForwardReceiver], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(self)`` holds (checked whenever something is received)."""
        deadline = time.monotonic() + timeout
        with self._record.condition:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met after {timeout}s")
                self._record.condition.wait(min(left, 0.05))

    def _note(self, update: Callable[[_Record], None]) -> None:
        with self._record.condition:
            update(self._record)
            self._record.condition.notify_all()

    # --- one connection -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)

        def count(record: _Record) -> None:
            record.connections += 1

        self._note(count)
        unpacker = new_unpacker()
        try:
            if self.shared_key is None or await self._handshake(reader, writer, unpacker, self.shared_key):
                await self._receive(reader, writer, unpacker)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except ProtocolViolation as error:
            reason = str(error)
            self._note(lambda record: record.errors.append(reason))
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._handlers.discard(task)
            self._note(_count_disconnect)

    async def _next(self, reader: asyncio.StreamReader, unpacker: msgpack.Unpacker) -> Any:
        """The next msgpack object, or raise ConnectionError at end of stream."""
        while True:
            try:
                return next(unpacker)
            except StopIteration:
                pass
            except (ValueError, msgpack.UnpackException) as error:
                raise ProtocolViolation(f"bytes that are not msgpack: {error}") from None
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("sender closed the connection")
            unpacker.feed(data)

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        unpacker: msgpack.Unpacker,
        shared_key: str,
    ) -> bool:
        nonce = self.nonce or os.urandom(16)
        auth_salt = os.urandom(16) if self.users is not None else b""
        helo = ["HELO", {"nonce": nonce, "auth": auth_salt, "keepalive": self.keepalive}]
        writer.write(msgpack.packb(helo, use_bin_type=True))
        ping = await self._next(reader, unpacker)
        if not (isinstance(ping, list) and len(ping) == 6 and ping[0] == "PING"):
            raise ProtocolViolation(f"expected PING, got {ping!r:.80}")
        _, client_host, salt_value, digest, username, password_digest = ping
        salt = as_bytes(salt_value)
        reason = ""
        expected = _sha512_hex(salt, as_bytes(client_host), nonce, shared_key.encode())
        if as_bytes(digest).decode("ascii", "replace") != expected:
            reason = "shared_key mismatch"
        elif self.users is not None:
            password = self.users.get(username)
            wanted = None if password is None else _sha512_hex(auth_salt, username.encode(), password.encode())
            if as_bytes(password_digest).decode("ascii", "replace") != wanted:
                reason = "username/password mismatch"
        accepted = not reason
        ping_seen = Ping(str(client_host), str(username), accepted, reason)
        self._note(lambda record: record.pings.append(ping_seen))
        our_digest = _sha512_hex(salt, self.hostname.encode(), nonce, shared_key.encode()) if accepted else ""
        writer.write(msgpack.packb(["PONG", accepted, reason, self.hostname, our_digest]))
        await writer.drain()
        return accepted

    async def _receive(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, unpacker: msgpack.Unpacker
    ) -> None:
        while True:
            message = decode_message(await self._next(reader, unpacker), self.buffer_chunk_size)
            if self.close_after is not None and len(self.messages) >= self.close_after:
                self.close_after = None
                return
            self._note(partial(_add_message, message))
            if self._on_message is not None:
                self._on_message(message)
            chunk = message.option.get("chunk") if message.option else None
            if chunk is None or self.ack_mode == "never":
                continue
            writer.write(GARBAGE if self.ack_mode == "garbage" else msgpack.packb({"ack": chunk}))
            await writer.drain()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a throwaway CA and the certificates it signed, for TLS tests."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server context presenting the server certificate (valid for localhost and 127.0.0.1)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a CA plus a server (localhost, 127.0.0.1) and a client certificate under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def issue(
        subject: str, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey | None, ca: bool
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer or key, hashes.SHA256()), key

    ca_cert, ca_key = issue("forward-test-ca", name("forward-test-ca"), None, ca=True)
    files: dict[str, str] = {}
    for role, (cert, key) in {
        "ca": (ca_cert, ca_key),
        "server": issue("localhost", ca_cert.subject, ca_key, ca=False),
        "client": issue("sidecar", ca_cert.subject, ca_key, ca=False),
    }.items():
        cert_path, key_path = directory / f"{role}.crt", directory / f"{role}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files[f"{role}_cert"], files[f"{role}_key"] = str(cert_path), str(key_path)
    return TlsFiles(
        ca=files["ca_cert"],
        server_cert=files["server_cert"],
        server_key=files["server_key"],
        client_cert=files["client_cert"],
        client_key=files["client_key"],
    )


def _count_disconnect(record: _Record) -> None:
    record.disconnects += 1


def _add_message(message: Message, record: _Record) -> None:
    record.messages.append(message)


def main() -> None:
    """Print every event received as a JSON line (for trying the sidecar by hand)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=24224)
    parser.add_argument("--shared-key")
    parser.add_argument("--buffer-chunk-size", type=int, help="decompress gzip chunks in pieces, like Fluent Bit")
    args = parser.parse_args()

    def show(message: Message) -> None:
        for event in message.events():
            line = {"tag": event.tag, "time_ns": event.time_ns, "record": event.record}
            print(json.dumps(line, default=repr), flush=True)

    with ForwardReceiver(
        args.port, shared_key=args.shared_key, buffer_chunk_size=args.buffer_chunk_size, on_message=show
    ):
        threading.Event().wait()


if __name__ == "__main__":
    main()

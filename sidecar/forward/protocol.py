"""Bytes of the Fluentd Forward protocol v1, as our sender writes and reads them.

Agent mode ships every line through here, so encoding is built for throughput: a chunk's entries are
assembled with ``bytes.join`` from pre-packed pieces (the EventTime and the record's map header and
key are packed once per call, each line only needs its msgpack ``str`` header) instead of calling
``msgpack.packb`` for every line. The chunk is then wrapped once as a *PackedForward* message
``[tag, bin(entries), {"chunk": id, "size": n, ("compressed": "gzip")}]`` — the mode Fluentd and
Fluent Bit both accept and the cheapest to produce.

The handshake helpers implement the shared-key exchange (HELO → PING → PONG) of the spec:
https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1
Digests are ``hex(sha512(salt + hostname + nonce + shared_key))``; they were checked against real
Fluent Bit v4.2.8 captures (``tests/fixtures/forward``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from sidecar.errors import ForwardError, HandshakeError

#: msgpack ext type Fluentd uses for EventTime (seconds + nanoseconds).
EVENT_TIME_EXT = 0

#: gzip level for ``compressed: "gzip"``: log text shrinks ~8x even at level 1, and higher levels cost
#: several times the CPU on the hot path for a few percent less.
GZIP_LEVEL = 1
# zlib's window bits for a gzip member (16 + 15): header with mtime 0, then deflate, then CRC and size.
_GZIP_WBITS = 31

_EVENT_TIME = struct.Struct(">BbII")  # fixext8 marker, ext type, seconds, nanoseconds
_NS = 1_000_000_000
# msgpack str headers for lengths below 256, looked up instead of computed on the hot path.
_SHORT_STR_HEADERS = tuple(bytes([0xA0 | n]) if n < 32 else bytes([0xD9, n]) for n in range(256))


def pack_event_time(time_ns: int) -> bytes:
    """The 10-byte msgpack EventTime (fixext8, ext type 0, big-endian u32 seconds + u32 nanoseconds)."""
    seconds, nanoseconds = divmod(time_ns, _NS)
    return _EVENT_TIME.pack(0xD7, EVENT_TIME_EXT, seconds, nanoseconds)


def unpack_event_time(data: bytes) -> int:
    """Nanoseconds since the epoch from the 8 data bytes of an EventTime ext."""
    seconds, nanoseconds = struct.unpack(">II", data)
    return int(seconds) * _NS + int(nanoseconds)


def str_header(length: int) -> bytes:
    """The msgpack ``str`` header for a payload of ``length`` bytes."""
    if length < 256:
        return _SHORT_STR_HEADERS[length]
    if length < 0x10000:
        return b"\xda" + length.to_bytes(2, "big")
    return b"\xdb" + length.to_bytes(4, "big")


def _map_header(size: int) -> bytes:
    if size < 16:
        return bytes([0x80 | size])
    return b"\xde" + size.to_bytes(2, "big")


def pack_line_entries(
    lines: Iterable[bytes | memoryview],
    time_ns: int,
    key: str = "log",
    extra: Mapping[str, Any] | None = None,
) -> tuple[bytes, int]:
    """Entries ``[EventTime, {key: line, **extra}]`` for lines that share one timestamp, concatenated.

    Returns ``(entries, count)`` ready for :func:`pack_message`. Lines are sent as msgpack ``str``
    without the trailing newline (pass them already stripped); like Fluent Bit, bytes that are not UTF-8
    are sent as they are. ``extra`` fields (e.g. the file path) are packed once and repeated per entry.
    The time, map header, key and extra fields are packed once per call: only a line's own ``str``
    header is made per line.
    """
    extra_packed = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in (extra or {}).items())
    prefix = b"\x92" + pack_event_time(time_ns) + _map_header(1 + len(extra or ())) + msgpack.packb(key)
    parts: list[bytes | memoryview] = []
    append = parts.append
    short = _SHORT_STR_HEADERS
    count = 0
    for line in lines:
        length = len(line)
        append(prefix)
        append(short[length] if length < 256 else str_header(length))
        append(line)
        if extra_packed:
            append(extra_packed)
        count += 1
    return b"".join(parts), count


def line_entry_overhead(key: str = "log", extra: Mapping[str, Any] | None = None) -> int:
    """Bytes of a :func:`pack_line_entries` entry besides its line and the line's ``str`` header.

    The EventTime is always 10 bytes, so the overhead is a constant per key and fields: what lets a
    sender size a chunk exactly before encoding it.
    """
    return len(pack_line_entries([b""], 0, key, extra)[0]) - len(str_header(0))


def pack_record_entries(time_ns: int, records: Iterable[bytes]) -> tuple[bytes, int]:
    """Entries ``[EventTime, record]`` for already-packed msgpack maps sharing one timestamp."""
    prefix = b"\x92" + pack_event_time(time_ns)
    parts: list[bytes] = []
    for record in records:
        parts.append(prefix)
        parts.append(record)
    return b"".join(parts), len(parts) // 2


def new_chunk_id() -> str:
    """A fresh chunk id as Fluent Bit makes them: base64 of 16 random bytes (24 characters)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def pack_message(
    tag: str,
    entries: bytes | list[bytes],
    count: int,
    chunk_id: str | None = None,
    compress: bool = False,
) -> bytes:
    """A (Compressed)PackedForward message carrying ``count`` concatenated ``entries``.

    ``entries`` may be one ``bytes`` or the list of pieces a chunk was gathered in: the message is then
    joined straight from the pieces (compressed piece by piece), never via a joined copy of the entries,
    so packing a chunk briefly needs its size twice, not three times.

    ``chunk_id`` asks the receiver for an ``{"ack": chunk_id}`` reply; a resent chunk keeps its id so a
    receiver that deduplicates can. With ``compress`` the entries travel as one gzip member (mtime 0)
    and the option says ``compressed: "gzip"``.
    """
    parts = [entries] if isinstance(entries, bytes) else entries
    if compress:
        gzipper = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        parts = [*map(gzipper.compress, parts), gzipper.flush()]
    option: dict[str, Any] = {"size": count}
    if chunk_id is not None:
        option["chunk"] = chunk_id
    if compress:
        option["compressed"] = "gzip"
    length = sum(map(len, parts))
    if length < 256:
        bin_header = b"\xc4" + bytes([length])
    elif length < 0x10000:
        bin_header = b"\xc5" + length.to_bytes(2, "big")
    else:
        bin_header = b"\xc6" + length.to_bytes(4, "big")
    return b"".join((b"\x93", msgpack.packb(tag), bin_header, *parts, msgpack.packb(option)))


def new_unpacker() -> msgpack.Unpacker:
    """A streaming decoder for what a receiver sends, in the shape the ``parse_*`` helpers expect.

    msgpack ``str`` becomes ``str``; bytes that are not UTF-8 (a server's raw salt) survive through
    ``surrogateescape``.
    """
    return msgpack.Unpacker(raw=False, unicode_errors="surrogateescape", max_buffer_size=1 << 20)


def parse_ack(reply: object) -> str:
    """The chunk id of an ``{"ack": chunk}`` reply; :class:`ForwardError` for anything else."""
    if isinstance(reply, dict):
        chunk = reply.get("ack")
        if isinstance(chunk, str):
            return chunk
        if isinstance(chunk, bytes):
            return chunk.decode("ascii", "replace")
    raise ForwardError(f"unexpected reply {_short(reply)} (expected {{'ack': chunk}})")


# --- shared-key handshake ----------------------------------------------------------------------------


def _raw(value: object) -> bytes:
    """Bytes of a msgpack str/bin; str decoded with surrogateescape keeps non-UTF-8 bytes intact."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise HandshakeError(f"expected a string or bytes, got {_short(value)}")


def shared_key_digest(salt: bytes, hostname: str, nonce: bytes, shared_key: str) -> str:
    """``hex(sha512(salt + hostname + nonce + shared_key))``: proves both ends know the key."""
    digest = hashlib.sha512(salt + hostname.encode() + nonce + shared_key.encode())
    return digest.hexdigest()


def password_digest(auth_salt: bytes, username: str, password: str) -> str:
    """``hex(sha512(auth_salt + username + password))``: user authentication when the server asks."""
    return hashlib.sha512(auth_salt + username.encode() + password.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Helo:
    """The server's opening of a shared-key handshake."""

    nonce: bytes
    auth_salt: bytes
    keepalive: bool


def parse_helo(message: object) -> Helo:
    """Read ``["HELO", {nonce, auth, keepalive}]``; :class:`HandshakeError` when it is not one."""
    if not (isinstance(message, list) and len(message) == 2 and message[0] == "HELO"):
        raise HandshakeError(f"expected HELO, got {_short(message)}")
    options = message[1]
    if not isinstance(options, dict) or "nonce" not in options:
        raise HandshakeError(f"HELO without a nonce: {_short(message)}")
    return Helo(
        nonce=_raw(options["nonce"]),
        auth_salt=_raw(options.get("auth", b"")),
        keepalive=bool(options.get("keepalive", True)),
    )


def new_salt() -> bytes:
    """A fresh shared-key salt for a PING: 32 hex characters, as Fluentd makes them.

    ASCII keeps the salt a valid msgpack ``str`` for every server (Ruby's in_forward concatenates it
    with binary strings, which raw non-UTF-8 bytes would break).
    """
    return os.urandom(16).hex().encode("ascii")


def pack_ping(
    helo: Helo,
    self_hostname: str,
    shared_key: str,
    salt: bytes,
    username: str = "",
    password: str = "",
) -> bytes:
    """``["PING", self_hostname, salt, key digest, username, password digest]`` answering ``helo``.

    The password digest is sent even without user auth (as Fluent Bit does: over an empty auth salt and
    empty credentials); servers ignore it unless they asked for a username.
    """
    ping: bytes = msgpack.packb(
        [
            "PING",
            self_hostname,
            salt.decode("utf-8", "surrogateescape"),
            shared_key_digest(salt, self_hostname, helo.nonce, shared_key),
            username,
            password_digest(helo.auth_salt, username, password),
        ],
        unicode_errors="surrogateescape",
    )
    return ping


def verify_pong(message: object, helo: Helo, salt: bytes, shared_key: str) -> str:
    """Check ``["PONG", ok, reason, server_hostname, digest]``; return the server's hostname.

    Raises :class:`HandshakeError` with the server's reason when it refused us, or when its digest
    does not prove it knows the shared key (someone else is answering on that port).
    """
    if not (isinstance(message, list) and len(message) == 5 and message[0] == "PONG"):
        raise HandshakeError(f"expected PONG, got {_short(message)}")
    _, ok, reason, hostname, digest = message
    if ok is not True:
        why = _raw(reason).decode("utf-8", "replace") if reason else "no reason given"
        raise HandshakeError(f"receiver refused the handshake: {why}; check --shared-key/--username")
    host = _raw(hostname).decode("utf-8", "replace")
    if _raw(digest).decode("ascii", "replace") != shared_key_digest(salt, host, helo.nonce, shared_key):
        raise HandshakeError(f"receiver {host!r} answered with a wrong shared-key digest; it does not share our key")
    return host


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

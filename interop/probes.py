"""Where a receiver starts losing: chunks of exact payload sizes, written straight with the protocol module.

The sidecar fills chunks to within a few bytes of ``--chunk-bytes``, which is close but not exact; these
probes send ``[tag, entries, {size, chunk(, compressed)}]`` messages whose payload (the entries, what the
receiver decompresses) is exactly the size asked for, enough of them to cross the receiver's own chunk
boundaries (about 12 MB in all, as a backlog would), each waiting for its ack. They report how many
records the receiver wrote out, or that it dropped the connection instead of acknowledging.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import msgpack

from interop.receivers import Receiver, Settings
from sidecar.forward.protocol import line_entry_overhead, new_chunk_id, pack_line_entries, pack_message, str_header

_TOTAL_BYTES = 12_000_000
_ACK_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Probe:
    """Chunks of ``payload`` bytes each (with ``whole_message``: messages of that many bytes)."""

    name: str
    payload: int
    compress: bool
    settings: Settings = field(default_factory=Settings)
    whole_message: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    receiver: str
    probe: Probe
    chunks: int
    sent: int
    received: int
    failure: str | None


PROBES = (
    Probe("gzip 786,432 (our default)", 786_432, True),
    Probe("gzip 1,024,000 (= Buffer_Chunk_Size)", 1_024_000, True),
    Probe("gzip 1,024,001", 1_024_001, True),
    Probe("gzip 2,097,152 (old default)", 2_097_152, True),
    Probe("gzip 1,000,000, Buffer_Chunk_Size 1M", 1_000_000, True, Settings(buffer_chunk_size=1_000_000)),
    Probe("gzip 1,000,001, Buffer_Chunk_Size 1M", 1_000_001, True, Settings(buffer_chunk_size=1_000_000)),
    Probe("plain message 6,143,998 (Buffer_Max_Size - 2)", 6_143_998, False, whole_message=True),
    Probe("plain message 6,143,999", 6_143_999, False, whole_message=True),
)


def _lines(tag: str, first: int, payload: int) -> list[bytes]:
    """Numbered lines whose entries (key ``log``, no other field) total exactly ``payload`` bytes."""
    overhead = line_entry_overhead("log")
    lines: list[bytes] = []
    size = 0
    while True:
        text = b"%s %08d " % (tag.encode(), first + len(lines)) + b"x" * 80
        entry = overhead + len(str_header(len(text))) + len(text)
        if size + 2 * entry > payload:
            break
        lines.append(text)
        size += entry
    rest = payload - size - overhead
    head = b"%s %08d " % (tag.encode(), first + len(lines))
    length = rest - 1
    while length + len(str_header(length)) != rest:
        length -= 1
    lines.append(head + b"y" * (length - len(head)))
    return lines


def _payload_for_message(tag: str, message: int) -> int:
    """The payload size that makes a whole uncompressed message exactly ``message`` bytes long."""
    sample = pack_message(tag, b"x" * message, 1, new_chunk_id())
    return message - (len(sample) - message)


def _ack(sock: socket.socket, chunk_id: str) -> str | None:
    """None once ``chunk_id`` is acknowledged, else why not."""
    unpacker = msgpack.Unpacker(raw=False)
    sock.settimeout(_ACK_TIMEOUT)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return "connection closed, no ack"
            unpacker.feed(data)
            for reply in unpacker:
                if isinstance(reply, dict) and reply.get("ack") == chunk_id:
                    return None
    except TimeoutError:
        return f"no ack within {_ACK_TIMEOUT:g}s"
    except OSError as error:
        return f"connection failed: {error.strerror or error}"


def run(receiver: Receiver, probe: Probe, index: int) -> ProbeResult:
    """Send ``probe``'s chunks to ``receiver`` (started and stopped here) and count what it kept."""
    tag = f"probe{index}"
    payload = _payload_for_message(tag, probe.payload) if probe.whole_message else probe.payload
    chunks = max(1, _TOTAL_BYTES // payload)
    sent = 0
    failure = None
    receiver.start(probe.settings)
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=_ACK_TIMEOUT) as sock:
            for _ in range(chunks):
                entries, count = pack_line_entries(_lines(tag, sent, payload), time.time_ns())
                assert len(entries) == payload, (len(entries), payload)
                chunk_id = new_chunk_id()
                sock.sendall(pack_message(tag, entries, count, chunk_id, probe.compress))
                sent += count
                failure = _ack(sock, chunk_id)
                if failure is not None:
                    break
        time.sleep(1.0)  # one flush
    finally:
        receiver.stop()
    kept = {record.get("log") for record in receiver.records(tag)}
    return ProbeResult(receiver.name, probe, chunks, sent, len(kept), failure)

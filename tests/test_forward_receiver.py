"""The test receiver understands real Fluent Bit v4.2.8 traffic and the other senders we test with.

Sender captures are replayed over a real socket into :class:`ForwardReceiver`; what it decodes must
match what the fixture README (tests/fixtures/forward/README.md) says each file holds.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from fluent.sender import EventTime, FluentSender

from tests.forward_receiver import ForwardReceiver, Message, decode_message, make_tls_files, read_objects

FIXTURES = Path(__file__).parent / "fixtures" / "forward"
NONCE = b"0123456789abcdef"
HEALTHZ = {"log": "GET /healthz 200", "level": "info"}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def replay(receiver: ForwardReceiver, data: bytes, replies: int = 0) -> list[object]:
    """Send captured bytes over a socket; read ``replies`` msgpack replies; close."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        got: list[object] = []
        if receiver.shared_key is not None:
            sock.recv(4096)  # the HELO; the capture answers a fixed nonce
        sock.sendall(data)
        while len(got) < replies:
            chunk = sock.recv(4096)
            if not chunk:
                break
            unpacker.feed(chunk)
            got.extend(unpacker)
        return got


def tail_line(index: int) -> str:
    return f"id={index:07d}"


def check_healthz(messages: list[Message], mode: str, option: dict[str, object] | None) -> None:
    assert [m.mode for m in messages] == [mode, mode]
    for message in messages:
        assert message.tag == "app.web"
        assert [record for _, record in message.entries] == [HEALTHZ]
        if option is None:
            assert message.option is None
        else:
            assert message.option is not None
            assert {k: v for k, v in message.option.items() if k != "chunk"} == option


def check_tail(messages: list[Message], mode: str) -> None:
    assert len(messages) == 1
    (message,) = messages
    assert (message.mode, message.tag, len(message.entries)) == (mode, "app.log", 3)
    for index, (time_ns, record) in enumerate(message.entries):
        assert list(record) == ["log"]
        assert len(record["log"]) == 102
        assert tail_line(index) in record["log"]
        assert time_ns > 1_700_000_000 * 10**9


def expect_forward_default(messages: list[Message]) -> None:
    check_healthz(messages, "Forward", None)


def expect_forward_ack(messages: list[Message]) -> None:
    check_healthz(messages, "Forward", {"size": 1, "fluent_signal": 0})
    assert all(len(m.option["chunk"]) == 24 for m in messages if m.option)


def expect_forward_gzip(messages: list[Message]) -> None:
    check_healthz(messages, "CompressedPackedForward", {"size": 1, "compressed": "gzip", "fluent_signal": 0})
    assert [m.gzip_members for m in messages] == [1, 1]


def expect_time_as_integer(messages: list[Message]) -> None:
    check_healthz(messages, "Forward", None)
    assert all(t % 10**9 == 0 for m in messages for t, _ in m.entries)


def expect_forward_nested(messages: list[Message]) -> None:
    assert [m.mode for m in messages] == ["Forward"]
    assert messages[0].entries[0][1] == {
        "message": "payment failed",
        "kubernetes": {"pod_name": "shop-7d9f", "namespace_name": "prod", "labels": {"app": "shop"}},
        "status": 502,
    }


def expect_send_options(messages: list[Message]) -> None:
    check_healthz(messages, "Forward", {"size": 1, "fluent_signal": 0})


def expect_packed_forward(messages: list[Message]) -> None:
    (message,) = messages
    assert (message.mode, message.tag) == ("PackedForward", "app.web")
    assert message.option == {"chunk": "p8n9gmxTQVC8/nh2wlKKeQ==", "size": 3}
    assert message.entries == [(1_700_000_000_123_456_789, {"log": f"line {i}"}) for i in range(3)]


def expect_tail_default(messages: list[Message]) -> None:
    check_tail(messages, "Forward")
    assert messages[0].option is None


def expect_tail_ack(messages: list[Message]) -> None:
    check_tail(messages, "Forward")
    option = messages[0].option
    assert option is not None
    assert (len(option["chunk"]), option["size"], option["fluent_signal"]) == (24, 3, 0)


def expect_tail_gzip(messages: list[Message]) -> None:
    check_tail(messages, "CompressedPackedForward")
    assert messages[0].option == {"size": 3, "compressed": "gzip", "fluent_signal": 0}
    assert messages[0].gzip_members == 1


def expect_dummy_nested(messages: list[Message]) -> None:
    (message,) = messages
    record = {
        "message": "payment failed",
        "status": 502,
        "latency_ms": 12.5,
        "ok": False,
        "retry": None,
        "tags": ["checkout", "eu-west-1"],
        "kubernetes": {
            "pod_name": "shop-7d9f",
            "namespace_name": "prod",
            "labels": {"app": "shop", "tier": "web"},
        },
    }
    assert (message.mode, message.tag) == ("Forward", "k8s.prod.shop")
    assert message.entries == [(1_763_877_600_123_456_789, record)] * 2


def expect_ack_request(messages: list[Message]) -> None:
    (message,) = messages
    assert (message.mode, message.tag, message.option) == (
        "PackedForward",
        "app.log",
        {"chunk": "p8n9gmxTQVC8/nh2wlKKeQ==", "size": 3},
    )
    assert [t for t, _ in message.entries] == [1_763_877_600_123_456_789 + i for i in range(3)]
    assert [tail_line(i) in r["log"] for i, (_, r) in enumerate(message.entries)] == [True] * 3


SENDER_FIXTURES: dict[str, Callable[[list[Message]], None]] = {
    "forward-default.bin": expect_forward_default,
    "forward-ack.bin": expect_forward_ack,
    "forward-gzip.bin": expect_forward_gzip,
    "forward-time-as-integer.bin": expect_time_as_integer,
    "forward-nested.bin": expect_forward_nested,
    "forward-send-options.bin": expect_send_options,
    "packed-forward-request.bin": expect_packed_forward,
    "tail-default.bin": expect_tail_default,
    "tail-ack.bin": expect_tail_ack,
    "tail-gzip.bin": expect_tail_gzip,
    "dummy-nested.bin": expect_dummy_nested,
    "ack-request.bin": expect_ack_request,
}


@pytest.mark.parametrize("name", sorted(SENDER_FIXTURES))
def test_receiver_decodes_fluent_bit_capture(name: str) -> None:
    with ForwardReceiver() as receiver:
        replay(receiver, fixture(name))
        receiver.wait_until(lambda r: r.connections == 1 and not r._handlers)
        SENDER_FIXTURES[name](receiver.messages)
        assert receiver.errors == []


@pytest.mark.parametrize("name", ["forward-gzip.bin", "tail-gzip.bin"])
def test_gzip_payloads_inflate_to_documented_sizes(name: str) -> None:
    sizes = {"forward-gzip.bin": [48, 48], "tail-gzip.bin": [372]}
    payloads = [gzip.decompress(obj[1]) for obj in read_objects(fixture(name))]
    assert [len(p) for p in payloads] == sizes[name]


def test_gzip_with_several_members_decodes_all_entries() -> None:
    (original,) = read_objects(fixture("packed-forward-request.bin"))
    payload = original[1]
    split = payload.index(b"\x92", 1)
    members = gzip.compress(payload[:split]) + gzip.compress(payload[split:])
    message = decode_message([original[0], members, {"size": 3, "compressed": "gzip"}])
    assert (message.mode, message.gzip_members, len(message.entries)) == ("CompressedPackedForward", 2, 3)


@pytest.mark.parametrize("name", ["packed-forward-request.bin", "ack-request.bin"])
def test_receiver_acks_like_fluent_bit_in_forward(name: str) -> None:
    reply_file = {"packed-forward-request.bin": "in_forward-ack-reply.bin", "ack-request.bin": "ack-reply.bin"}
    with ForwardReceiver() as receiver:
        replies = replay(receiver, fixture(name), replies=1)
    assert replies == read_objects(fixture(reply_file[name]))


def test_receiver_rejects_size_option_that_does_not_match_entries() -> None:
    (original,) = read_objects(fixture("packed-forward-request.bin"))
    original[2]["size"] = 2
    with ForwardReceiver() as receiver:
        replay(receiver, msgpack.packb(original))
        receiver.wait_until(lambda r: bool(r.errors))
        assert receiver.messages == []
        assert "size 2 but 3 entries" in receiver.errors[0]


def ping_digest(salt: bytes, hostname: bytes, key: bytes) -> str:
    return hashlib.sha512(salt + hostname + NONCE + key).hexdigest()


@pytest.mark.parametrize("name", ["handshake-ping.bin", "tail-shared-key.bin"])
def test_fluent_bit_ping_digest_matches_spec_formula(name: str) -> None:
    ping = read_objects(fixture(name))[0]
    assert ping[:2] == ["PING", "edge-node"]
    salt = ping[2].encode("utf-8", "surrogateescape")
    assert len(salt) == 16
    assert ping[3] == ping_digest(salt, b"edge-node", b"s3cr3t")
    assert ping[4:] == ["", hashlib.sha512(b"").hexdigest()]


def test_receiver_accepts_captured_handshake_and_answers_the_captured_pong() -> None:
    with ForwardReceiver(shared_key="s3cr3t", nonce=NONCE, hostname="aggregator") as receiver:
        replies = replay(receiver, fixture("tail-shared-key.bin"), replies=1)
        receiver.wait_for(3)
        expect_tail_default(receiver.messages)
        assert [(p.hostname, p.accepted) for p in receiver.pings] == [("edge-node", True)]
    server = read_objects(fixture("tail-shared-key.server.bin"))
    assert replies == [server[1]]


def test_captured_pong_digest_proves_the_server_key() -> None:
    salt = read_objects(fixture("tail-shared-key.bin"))[0][2].encode("utf-8", "surrogateescape")
    helo, pong = read_objects(fixture("tail-shared-key.server.bin"))
    assert helo == ["HELO", {"nonce": NONCE, "auth": b"", "keepalive": True}]
    assert pong[:4] == ["PONG", True, "", "aggregator"]
    assert pong[4] == ping_digest(salt, b"aggregator", b"s3cr3t")


def test_receiver_refuses_wrong_shared_key_with_reason_and_closes() -> None:
    ping = read_objects(fixture("handshake-ping.bin"))[0]
    with ForwardReceiver(shared_key="other-key", nonce=NONCE) as receiver:
        replies = replay(receiver, msgpack.packb(ping, unicode_errors="surrogateescape"), replies=2)
        assert [p.accepted for p in receiver.pings] == [False]
    assert len(replies) == 1  # then the connection closed
    assert replies[0] == ["PONG", False, "shared_key mismatch", "aggregator", ""]


def test_fluent_logger_message_mode_reaches_receiver() -> None:
    with ForwardReceiver() as receiver:
        sender = FluentSender("app", port=receiver.port, nanosecond_precision=True)
        try:
            assert sender.emit_with_time("web", EventTime(1_700_000_000, 5), {"log": "hello"})
            assert sender.emit_with_time("web", 1_700_000_001, {"log": "world", "n": 2})
        finally:
            sender.close()
        receiver.wait_for(2)
        assert [m.mode for m in receiver.messages] == ["Message", "Message"]
        assert [(e.tag, e.time_ns, e.record) for e in receiver.events()] == [
            ("app.web", 1_700_000_000_000_000_005, {"log": "hello"}),
            ("app.web", 1_700_000_001_000_000_000, {"log": "world", "n": 2}),
        ]


def test_receiver_serves_tls_with_generated_ca(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    (request,) = read_objects(fixture("packed-forward-request.bin"))
    with ForwardReceiver(tls=tls.server_context()) as receiver:
        context = ssl.create_default_context(cafile=tls.ca)
        with (
            socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(msgpack.packb(request))
            reply = msgpack.unpackb(sock.recv(4096))
        assert reply == {"ack": "p8n9gmxTQVC8/nh2wlKKeQ=="}
        expect_packed_forward(receiver.messages)


def test_receiver_restarts_on_same_port() -> None:
    receiver = ForwardReceiver()
    receiver.start()
    port = receiver.port
    receiver.stop()
    receiver.start()
    try:
        assert receiver.port == port
        replay(receiver, fixture("forward-default.bin"))
        receiver.wait_for(2)
    finally:
        receiver.stop()


def _gzip_message(lines: list[bytes]) -> tuple[list[object], list[int]]:
    """A CompressedPackedForward message of ``lines`` and where each entry ends in its payload."""
    entries = [msgpack.packb([1, {"log": line}]) for line in lines]
    ends = [sum(map(len, entries[: i + 1])) for i in range(len(entries))]
    return ["t", gzip.compress(b"".join(entries)), {"size": len(entries), "compressed": "gzip"}], ends


def test_piecewise_decompression_drops_exactly_the_records_straddling_a_piece_boundary() -> None:
    message, ends = _gzip_message([b"%05d" % i + b"x" * 90 for i in range(100)])
    decoded = decode_message(message, piece_size=1000)
    starts = [0, *ends[:-1]]
    pieces = [(start // 1000, (end - 1) // 1000) for start, end in zip(starts, ends, strict=True)]
    straddling = {i for i, (first, last) in enumerate(pieces) if first != last}
    assert straddling
    assert decoded.dropped == len(straddling)
    assert [int(r["log"][:5]) for _, r in decoded.entries] == [i for i in range(100) if i not in straddling]


def test_piecewise_decompression_keeps_a_payload_that_fits_one_piece_and_plain_chunks() -> None:
    message, ends = _gzip_message([b"line %d" % i for i in range(50)])
    assert len(decode_message(message, piece_size=ends[-1]).entries) == 50
    plain = ["t", b"".join(msgpack.packb([1, {"log": b"x" * 100}]) for _ in range(50)), {"size": 50}]
    assert len(decode_message(plain, piece_size=100).entries) == 50

"""Our Forward encoding decodes exactly like Fluent Bit v4.2.8's captured traffic (decoded, not byte for byte)."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import msgpack
import pytest

from sidecar.errors import ConfigError, ForwardError, HandshakeError
from sidecar.forward.client import Receiver
from sidecar.forward.protocol import (
    Helo,
    new_chunk_id,
    new_salt,
    pack_event_time,
    pack_line_entries,
    pack_message,
    pack_ping,
    pack_record_entries,
    parse_ack,
    parse_helo,
    unpack_event_time,
    verify_pong,
)
from tests.forward_receiver import decode_message, read_objects

FIXTURES = Path(__file__).parent / "fixtures" / "forward"
NONCE = b"0123456789abcdef"


def objects(name: str) -> list[object]:
    return read_objects((FIXTURES / name).read_bytes())


def test_event_time_matches_fluent_bit_fixed_timestamp() -> None:
    (message,) = objects("dummy-nested.bin")
    assert isinstance(message, list)
    captured = message[1][0][0]
    ours = msgpack.unpackb(pack_event_time(1_763_877_600_123_456_789))
    assert ours == captured
    assert unpack_event_time(ours.data) == 1_763_877_600_123_456_789


def test_packed_forward_message_decodes_like_captured_request() -> None:
    (captured,) = objects("packed-forward-request.bin")
    entries, count = pack_line_entries([f"line {i}".encode() for i in range(3)], 1_700_000_000_123_456_789)
    ours = pack_message("app.web", entries, count, chunk_id="p8n9gmxTQVC8/nh2wlKKeQ==")
    assert read_objects(ours) == [captured]
    assert decode_message(read_objects(ours)[0]) == decode_message(captured)


def test_compressed_message_decodes_like_fluent_bit_gzip_capture() -> None:
    (captured,) = objects("tail-gzip.bin")
    expected = decode_message(captured)
    parts = [pack_line_entries([record["log"].encode()], time_ns)[0] for time_ns, record in expected.entries]
    ours = decode_message(read_objects(pack_message("app.log", b"".join(parts), 3, compress=True))[0])
    assert (ours.mode, ours.tag, ours.entries) == (expected.mode, expected.tag, expected.entries)
    assert ours.option == {"size": 3, "compressed": "gzip"}
    assert ours.gzip_members == 1


def test_entries_match_fluent_bit_tail_entries() -> None:
    (captured,) = objects("tail-ack.bin")
    expected = decode_message(captured)
    time_ns = expected.entries[0][0]
    lines = [record["log"].encode() for _, record in expected.entries]
    entries, count = pack_line_entries(lines, time_ns)
    ours = decode_message(read_objects(pack_message("app.log", entries, count, new_chunk_id()))[0])
    assert [record for _, record in ours.entries] == [record for _, record in expected.entries]
    assert ours.option is not None
    assert expected.option is not None
    assert ours.option["size"] == expected.option["size"] == 3


@pytest.mark.parametrize("length", [0, 31, 32, 255, 256, 65535, 65536])
def test_line_lengths_at_msgpack_header_boundaries_round_trip(length: int) -> None:
    line = b"x" * length
    entries, _ = pack_line_entries([memoryview(line)], 5)
    ((time_ns, record),) = decode_message(["t", entries]).entries
    assert (time_ns, record) == (5, {"log": "x" * length})


def test_non_utf8_bytes_travel_unchanged_like_fluent_bit() -> None:
    entries, _ = pack_line_entries([b"caf\xe9"], 0)
    ((_, record),) = decode_message(["t", entries]).entries
    assert record["log"].encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_extra_fields_are_added_to_every_record() -> None:
    entries, count = pack_line_entries([b"a", b"b"], 7, key="message", extra={"file": "/var/log/app.log"})
    decoded = decode_message(["t", entries, {"size": count}])
    assert decoded.entries == [(7, {"message": m, "file": "/var/log/app.log"}) for m in "ab"]


def test_record_entries_wrap_prepacked_maps() -> None:
    entries, count = pack_record_entries(9, [msgpack.packb({"a": 1}), msgpack.packb({"b": [2]})])
    assert decode_message(["t", entries, {"size": count}]).entries == [(9, {"a": 1}), (9, {"b": [2]})]


def test_chunk_id_is_base64_of_16_bytes_like_fluent_bit() -> None:
    chunk = new_chunk_id()
    assert len(chunk) == 24
    assert len(base64.b64decode(chunk)) == 16
    assert chunk != new_chunk_id()


def test_gzip_payload_is_one_member_with_zero_mtime() -> None:
    message = read_objects(pack_message("t", b"\x92\x00\x80", 1, compress=True))[0]
    assert isinstance(message, list)
    assert gzip.decompress(message[1]) == b"\x92\x00\x80"
    assert message[1][4:8] == b"\x00\x00\x00\x00"


def test_message_packed_from_pieces_is_the_message_of_the_joined_entries() -> None:
    pieces = [pack_line_entries([f"piece {i} line {j}".encode() for j in range(50)], i)[0] for i in range(4)]
    joined = b"".join(pieces)
    assert pack_message("t", pieces, 200, "id") == pack_message("t", joined, 200, "id")
    gzipped = read_objects(pack_message("t", pieces, 200, compress=True))[0]
    assert isinstance(gzipped, list)
    assert gzip.decompress(gzipped[1]) == joined
    assert decode_message(gzipped).gzip_members == 1


def test_helo_without_keepalive_from_fluent_bit_in_forward_parses() -> None:
    helo = parse_helo(objects("in_forward-helo.bin")[0])
    assert (len(helo.nonce), len(helo.auth_salt), helo.keepalive) == (16, 16, True)


def test_ping_decodes_like_fluent_bit_ping_for_same_salt() -> None:
    captured_ping = objects("tail-shared-key.bin")[0]
    assert isinstance(captured_ping, list)
    helo = parse_helo(objects("tail-shared-key.server.bin")[0])
    assert helo == Helo(NONCE, b"", True)
    salt = captured_ping[2].encode("utf-8", "surrogateescape")
    assert read_objects(pack_ping(helo, "edge-node", "s3cr3t", salt)) == [captured_ping]


def test_our_salt_is_ascii_hex() -> None:
    salt = new_salt()
    assert len(salt) == 32
    int(salt, 16)


def test_captured_pong_verifies_with_the_key() -> None:
    salt = objects("tail-shared-key.bin")[0][2].encode("utf-8", "surrogateescape")  # type: ignore[index]
    helo, pong = objects("tail-shared-key.server.bin")
    assert verify_pong(pong, parse_helo(helo), salt, "s3cr3t") == "aggregator"


def test_pong_from_server_with_another_key_is_rejected() -> None:
    salt = objects("tail-shared-key.bin")[0][2].encode("utf-8", "surrogateescape")  # type: ignore[index]
    helo, pong = objects("tail-shared-key.server.bin")
    with pytest.raises(HandshakeError, match="wrong shared-key digest"):
        verify_pong(pong, parse_helo(helo), salt, "not-the-key")


def test_refusing_pong_reports_the_server_reason() -> None:
    with pytest.raises(HandshakeError, match="refused the handshake: shared_key mismatch"):
        verify_pong(["PONG", False, "shared_key mismatch", "agg", ""], Helo(NONCE, b"", True), b"s", "k")


def test_something_else_than_helo_is_a_handshake_error() -> None:
    with pytest.raises(HandshakeError, match="expected HELO"):
        parse_helo({"ack": "x"})


def test_ack_reply_from_fluent_bit_parses_to_the_chunk() -> None:
    assert parse_ack(objects("ack-reply.bin")[0]) == "p8n9gmxTQVC8/nh2wlKKeQ=="


@pytest.mark.parametrize("reply", [42, {"ok": 1}, ["ack"], {"ack": 3}])
def test_reply_that_is_not_an_ack_is_a_forward_error(reply: object) -> None:
    with pytest.raises(ForwardError, match="unexpected reply"):
        parse_ack(reply)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fluentd", Receiver("fluentd", 24224)),
        ("fluentd:24225", Receiver("fluentd", 24225)),
        ("[::1]:9000", Receiver("::1", 9000)),
        (" 10.0.0.1:1 ", Receiver("10.0.0.1", 1)),
    ],
)
def test_receiver_address_parses(text: str, expected: Receiver) -> None:
    assert Receiver.parse(text) == expected


@pytest.mark.parametrize("text", ["", ":24224", "host:", "host:0", "host:99999", "host:port", "[::1"])
def test_bad_receiver_address_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="receiver"):
        Receiver.parse(text)


def test_receiver_names_itself_host_colon_port() -> None:
    assert (str(Receiver("a", 1)), str(Receiver("::1", 2))) == ("a:1", "[::1]:2")

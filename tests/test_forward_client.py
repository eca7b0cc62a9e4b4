"""One connection to a real receiver: acks, handshake, TLS, and the errors a user sees."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import ForwardError, HandshakeError
from sidecar.forward.client import Connection, ForwardOptions, Receiver, TlsOptions
from sidecar.forward.protocol import new_chunk_id, pack_line_entries, pack_message
from tests.forward_receiver import ForwardReceiver, make_tls_files


def chunk(text: str, chunk_id: str | None = None) -> tuple[bytes, str | None]:
    entries, count = pack_line_entries([text.encode()], 1_700_000_000_000_000_000)
    chunk_id = chunk_id or new_chunk_id()
    return pack_message("app.log", entries, count, chunk_id), chunk_id


def run(receiver: ForwardReceiver, options: ForwardOptions, body: Callable[[Connection], Awaitable[Any]]) -> Any:
    """Open a connection to ``receiver``, run ``body`` with it, close it."""

    async def main() -> Any:
        connection = Connection(Receiver("127.0.0.1", receiver.port), options)
        await connection.open()
        try:
            return await body(connection)
        finally:
            await connection.close()

    return asyncio.run(main())


async def send_and_wait(connection: Connection, texts: list[str]) -> None:
    futures = [await connection.send(*chunk(text)) for text in texts]
    await asyncio.gather(*futures)


def test_pipelined_chunks_are_all_acknowledged() -> None:
    with ForwardReceiver() as receiver:
        run(receiver, ForwardOptions(), lambda c: send_and_wait(c, ["a", "b", "c"]))
        assert [e.record["log"] for e in receiver.events()] == ["a", "b", "c"]


def test_shared_key_handshake_succeeds_and_learns_server_name() -> None:
    with ForwardReceiver(shared_key="s3cr3t", hostname="aggregator") as receiver:

        async def body(connection: Connection) -> str | None:
            await send_and_wait(connection, ["x"])
            return connection.server_hostname

        options = ForwardOptions(shared_key="s3cr3t", self_hostname="pod-1")
        assert run(receiver, options, body) == "aggregator"
        assert [(p.hostname, p.accepted) for p in receiver.pings] == [("pod-1", True)]
        assert len(receiver.events()) == 1


def test_wrong_shared_key_fails_with_receiver_and_reason() -> None:
    with ForwardReceiver(shared_key="s3cr3t") as receiver:
        with pytest.raises(HandshakeError) as error:
            run(receiver, ForwardOptions(shared_key="wrong"), send_and_wait_nothing)
        assert str(error.value).startswith(f"receiver 127.0.0.1:{receiver.port}: ")
        assert "shared_key mismatch" in str(error.value)


async def send_and_wait_nothing(connection: Connection) -> None:
    return None


def test_username_and_password_are_checked() -> None:
    with ForwardReceiver(shared_key="k", users={"alice": "pw"}) as receiver:
        run(receiver, ForwardOptions(shared_key="k", username="alice", password="pw"), send_and_wait_nothing)
        with pytest.raises(HandshakeError, match="username/password mismatch"):
            run(receiver, ForwardOptions(shared_key="k", username="alice", password="no"), send_and_wait_nothing)


def test_missing_shared_key_is_reported_when_receiver_sends_helo() -> None:
    with (
        ForwardReceiver(shared_key="s3cr3t") as receiver,
        pytest.raises(HandshakeError, match="requires a shared key"),
    ):
        run(receiver, ForwardOptions(), lambda c: send_and_wait(c, ["x"]))


def test_refused_connection_names_the_receiver() -> None:
    receiver = ForwardReceiver()
    receiver.start()
    receiver.stop()
    with pytest.raises(ForwardError, match=rf"receiver 127.0.0.1:{receiver.port}: cannot connect"):
        run(receiver, ForwardOptions(), send_and_wait_nothing)


def test_tls_with_generated_ca_and_client_certificate(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    tls = TlsOptions(ca_file=files.ca, cert_file=files.client_cert, key_file=files.client_key)
    with ForwardReceiver(tls=files.server_context(require_client_cert=True)) as receiver:
        run(receiver, ForwardOptions(tls=tls, shared_key=None), lambda c: send_and_wait(c, ["secure"]))
        assert [e.record for e in receiver.events()] == [{"log": "secure"}]


def test_tls_server_not_signed_by_our_ca_is_refused(tmp_path: Path) -> None:
    ours, theirs = make_tls_files(tmp_path / "a"), make_tls_files(tmp_path / "b")
    with ForwardReceiver(tls=theirs.server_context()) as receiver:
        options = ForwardOptions(tls=TlsOptions(ca_file=ours.ca))
        with pytest.raises(ForwardError, match="TLS failed: CERTIFICATE_VERIFY_FAILED"):
            run(receiver, options, send_and_wait_nothing)
        insecure = ForwardOptions(tls=TlsOptions(verify=False))
        run(receiver, insecure, lambda c: send_and_wait(c, ["unverified"]))
        assert len(receiver.events()) == 1


def test_missing_ack_fails_the_chunk_after_the_timeout() -> None:
    with (
        ForwardReceiver(ack_mode="never") as receiver,
        pytest.raises(ForwardError, match=r"no ack for chunk \S+ within 0\.2s"),
    ):
        run(receiver, ForwardOptions(ack_timeout=0.2), lambda c: send_and_wait(c, ["lost?"]))


def test_garbage_reply_fails_the_connection() -> None:
    with ForwardReceiver(ack_mode="garbage") as receiver, pytest.raises(ForwardError, match="not msgpack"):
        run(receiver, ForwardOptions(), lambda c: send_and_wait(c, ["x"]))


def test_receiver_closing_fails_pending_chunks() -> None:
    with (
        ForwardReceiver(close_after=0) as receiver,
        pytest.raises(ForwardError, match="receiver closed the connection"),
    ):
        run(receiver, ForwardOptions(), lambda c: send_and_wait(c, ["x"]))


def test_in_flight_chunks_are_bounded() -> None:
    async def body(connection: Connection) -> int:
        for text in "ab":
            await connection.send(*chunk(text))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(connection.send(*chunk("c")), 0.2)
        return connection.in_flight

    with ForwardReceiver(ack_mode="never") as receiver:
        assert run(receiver, ForwardOptions(max_in_flight=2), body) == 2


def test_without_ack_send_completes_once_written() -> None:
    async def body(connection: Connection) -> None:
        entries, count = pack_line_entries([b"fire"], 0)
        future = await connection.send(pack_message("t", entries, count), None)
        assert future.done()

    with ForwardReceiver() as receiver:
        run(receiver, ForwardOptions(require_ack=False), body)
        receiver.wait_for(1)


def test_shared_key_against_receiver_without_one_times_out_with_a_hint() -> None:
    with (
        ForwardReceiver() as receiver,
        pytest.raises(HandshakeError, match="is a shared key configured on the receiver"),
    ):
        run(receiver, ForwardOptions(shared_key="k", connect_timeout=0.2), send_and_wait_nothing)

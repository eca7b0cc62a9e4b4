"""``sidecar agent``: follow log files and ship every line to Fluentd/Fluent Bit over the Forward protocol.

This module only turns options into objects: a :class:`~sidecar.forward.pool.ForwardPool` for the
receivers, and a :class:`~sidecar.modes.agent.sink.ForwardSink` that the shared runtime
(:func:`sidecar.runtime.run_mode`) feeds from the follow core. Every option is checked before anything
starts, so a typo is one line on stderr and exit code 2, not a sidecar that runs and ships nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from dataclasses import dataclass
from typing import Any

import click

from sidecar.core.config import FollowConfig
from sidecar.errors import ConfigError, ForwardError
from sidecar.forward.client import DEFAULT_PORT, ForwardOptions, Receiver, TlsOptions
from sidecar.forward.pool import ForwardPool
from sidecar.log import get_logger
from sidecar.modes.agent.multiline import PRESETS, RuleFactory, make_rule_factory
from sidecar.modes.agent.parsers import PARSER_NAMES, Parser, TimeReader, make_parser, make_time_reader
from sidecar.modes.agent.records import DEFAULT_TAG, Encoder, RecordShape, TagTemplate, parse_fields, pod_identity
from sidecar.modes.agent.sink import FLUENT_BIT_PIECE, ForwardSink, SinkOptions, default_chunk_bytes
from sidecar.observe.health import OutageLimit
from sidecar.options import (
    BYTE_SIZE,
    DURATION,
    compose,
    follow_config,
    follow_options,
    option,
    runtime_options,
)
from sidecar.runtime import ModeContext, RuntimeOptions, run_mode, runtime_options_from

log = get_logger(__name__)

receiver_options = compose(
    option("--fluentd-host", metavar="HOST", help="The receiver (Fluentd or Fluent Bit in_forward)."),
    option("--fluentd-port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, help="Its port."),
    option(
        "--forward",
        multiple=True,
        metavar="HOST:PORT",
        help="More receivers, tried in order when the ones before are down (repeatable).",
    ),
    option("--tls", is_flag=True, default=False, help="Talk TLS to the receivers."),
    option("--tls-ca", metavar="FILE", help="Trust only this CA bundle (PEM) instead of the system's."),
    option("--tls-cert", metavar="FILE", help="Client certificate (PEM), for receivers that require one."),
    option("--tls-key", metavar="FILE", help="Key of --tls-cert (PEM)."),
    option(
        "--tls-verify/--no-tls-verify",
        envvar="SIDECAR_TLS_VERIFY",
        default=True,
        help="Check the receiver's certificate and host name.",
    ),
    option("--shared-key", metavar="KEY", show_default=False, help="Forward shared key (handshake)."),
    option("--username", default="", show_default=False, help="User for receivers with user auth."),
    option("--password", default="", show_default=False, help="Password of --username."),
    option("--self-hostname", default=None, help="Our name in the handshake [default: the host name]."),
    option(
        "--outage-limit",
        type=DURATION.within("0s", "1d"),
        default="60s",
        help="/readyz answers 503 once no receiver has been connected for this long (0: at once); "
        "shorter outages are buffered by the files and leave the pod ready.",
    ),
)

delivery_options = compose(
    option(
        "--require-ack",
        type=click.BOOL,
        default=True,
        metavar="true|false",
        help="Commit lines only once the receiver acknowledged them (at-least-once); "
        "false commits on write (at-most-once: a receiver crash can lose chunks in flight).",
    ),
    option("--ack-timeout", type=DURATION.within("100ms", "1h"), default="30s",
           help="Resend a chunk not acknowledged this soon."),
    option(
        "--compress",
        type=click.Choice(["none", "gzip"]),
        default="none",
        help="gzip sends CompressedPackedForward: less network, more CPU. Chunks then default to 768KiB "
        "(see --chunk-bytes).",
    ),
    option("--chunk-records", type=click.IntRange(1, 1_000_000), default=10_000, help="Records per chunk at most."),
    option(
        "--chunk-bytes",
        # below, most lines would travel one per message; above, the chunks in flight would outgrow a
        # sidecar's memory limit, and no receiver's default takes them
        type=BYTE_SIZE.within("1KiB", "64MiB"),
        default=None,
        show_default="2MiB; 768KiB with --compress gzip",
        help="Bytes of records per chunk at most, before compression. Fluent Bit decompresses a gzip chunk "
        "in pieces of its in_forward Buffer_Chunk_Size (1,024,000 bytes by default), dropping records across pieces: "
        "raise this only with that setting.",
    ),
    option("--flush-interval", type=DURATION.within("10ms", "1h"), default="1s",
           help="Send a chunk at least this often."),
    option(
        "--max-in-flight",
        type=click.IntRange(1, 1024),
        default=4,
        help="Chunks sent but not acknowledged at most; then reading pauses (the files are the buffer). "
        "Memory grows by up to --chunk-bytes per chunk.",
    ),
)

record_options = compose(
    option(
        "--tag",
        default=DEFAULT_TAG,
        help="Forward tag; placeholders {file} {file_stem} {pod} {namespace} {node} {container}.",
    ),
    option("--message-key", default="log", help="Record key of the line."),
    option("--file-key", default="file", help="Record key of the file path; empty for none."),
    option("--field", multiple=True, metavar="KEY=VALUE", help="A static field on every record (repeatable)."),
    option(
        "--parser",
        type=click.Choice(PARSER_NAMES),
        default="none",
        help="Parse lines into fields; lines that do not parse are shipped as they are, and counted.",
    ),
    option("--regex", metavar="REGEX", help="For --parser regex: named groups become fields."),
    option("--time-key", metavar="KEY", help="Parsed field holding the event time [default: read time]."),
    option(
        "--time-format",
        metavar="STRPTIME",
        help="Format of --time-key, e.g. '%Y-%m-%d %H:%M:%S' [default: epoch seconds or ISO 8601].",
    ),
    option(
        "--multiline",
        type=click.Choice(sorted(PRESETS)),
        default=None,
        help="Join stack traces into one record.",
    ),
    option("--multiline-start", metavar="REGEX", help="Lines matching this begin a record; others join it."),
    option(
        "--multiline-timeout",
        type=DURATION.within("10ms", "1h"),
        default="1s",
        help="Ship a group that has waited this long for its next line.",
    ),
    option("--multiline-max-lines", type=click.IntRange(1, 100_000), default=1000, help="Lines per group at most."),
    option("--multiline-max-bytes", type=BYTE_SIZE.within("256", "64MiB"), default="1MiB",
           help="Bytes per group at most."),
)


def receivers_from(params: dict[str, Any]) -> list[Receiver]:
    """``--fluentd-host``/``--fluentd-port`` first, then each ``--forward``, in order."""
    receivers = []
    if params["fluentd_host"]:
        receivers.append(Receiver(params["fluentd_host"], params["fluentd_port"]))
    receivers.extend(Receiver.parse(text) for text in params["forward"])
    if not receivers:
        raise ConfigError("no receiver: give --fluentd-host (and --fluentd-port) or --forward HOST:PORT")
    return receivers


def forward_options_from(params: dict[str, Any]) -> ForwardOptions:
    """The connection options, checked for combinations that would silently do nothing."""
    tls = None
    if params["tls"]:
        tls = TlsOptions(
            ca_file=params["tls_ca"],
            cert_file=params["tls_cert"],
            key_file=params["tls_key"],
            verify=params["tls_verify"],
        )
        tls.context()  # load the files now: a wrong path is a startup error, not a retry loop
    else:
        for name in ("tls_ca", "tls_cert", "tls_key"):
            if params[name]:
                raise ConfigError(f"--{name.replace('_', '-')} is set but --tls is off; add --tls")
    if (params["username"] or params["password"]) and not params["shared_key"]:
        raise ConfigError("--username/--password need --shared-key (user auth is part of the handshake)")
    return ForwardOptions(
        tls=tls,
        shared_key=params["shared_key"],
        self_hostname=params["self_hostname"] or socket.gethostname(),
        username=params["username"],
        password=params["password"],
        require_ack=params["require_ack"],
        ack_timeout=params["ack_timeout"],
        max_in_flight=params["max_in_flight"],
    )


def chunk_bytes_from(params: dict[str, Any]) -> int:
    """``--chunk-bytes``, or its default for ``--compress``; warns when Fluent Bit would drop records."""
    given: int | None = params["chunk_bytes"]
    if given is None:
        return default_chunk_bytes(params["compress"] == "gzip")
    if params["compress"] == "gzip" and given > FLUENT_BIT_PIECE:
        log.warning(
            "chunk_bytes_over_fluent_bit_default",
            chunk_bytes=given,
            fluent_bit_buffer_chunk_size=FLUENT_BIT_PIECE,
            advice="Fluent Bit receivers drop records of larger gzip chunks: set their Buffer_Chunk_Size above it",
        )
    return given


@dataclass(frozen=True, slots=True)
class AgentMode:
    """Agent mode's whole configuration, built and checked once from the command line (:func:`agent_mode`)."""

    follow: FollowConfig
    runtime: RuntimeOptions
    receivers: tuple[Receiver, ...]
    forward: ForwardOptions
    shape: RecordShape
    parser: Parser | None
    time_reader: TimeReader | None
    multiline: RuleFactory | None
    sink: SinkOptions
    outage_limit: float
    name: str = "agent"

    def make_sink(self, ctx: ModeContext) -> ForwardSink:
        """The pool, its watch and the sink, made inside the running loop (they start tasks)."""
        pool = ForwardPool(list(self.receivers), self.forward, ctx.metrics)
        outage = OutageLimit(pool.not_ready_reason, self.outage_limit)
        ctx.health.add_ready_check("receiver", outage)
        watch = ReceiverWatch(pool)

        def tick() -> None:
            watch.check()
            outage()  # the outage starts when it is first seen: every tick, not only at the next probe

        sink = ForwardSink(
            pool,
            self.shape,
            Encoder(self.shape.message_key, self.parser, self.time_reader, ctx.metrics),
            ctx.metrics,
            self.sink,
            self.multiline,
            on_tick=tick,
        )
        watch.start()
        sink.start()
        return sink


def agent_mode(params: dict[str, Any]) -> AgentMode:
    """Check every agent option now: a mistake is one line and exit code 2, before anything starts."""
    pod = pod_identity()
    shape = RecordShape(
        TagTemplate(params["tag"], pod),
        message_key=params["message_key"],
        file_key=params["file_key"],
        static=parse_fields(params["field"]),
        pod=pod,
    )
    sink = SinkOptions(
        chunk_records=params["chunk_records"],
        chunk_bytes=chunk_bytes_from(params),
        compress=params["compress"] == "gzip",
        flush_interval=params["flush_interval"],
        max_in_flight=params["max_in_flight"],
        multiline_timeout=params["multiline_timeout"],
        multiline_max_lines=params["multiline_max_lines"],
        multiline_max_bytes=params["multiline_max_bytes"],
    )
    return AgentMode(
        follow=follow_config(params),
        runtime=runtime_options_from(params),
        receivers=tuple(receivers_from(params)),
        forward=forward_options_from(params),
        shape=shape,
        parser=make_parser(params["parser"], params["regex"]),
        time_reader=make_time_reader(params["time_key"], params["time_format"], params["parser"]),
        multiline=make_rule_factory(params["multiline"], params["multiline_start"]),
        sink=sink,
        outage_limit=params["outage_limit"],
    )


class ReceiverWatch:
    """Connects early (so readiness is true before the first chunk), keeps a connection up while the app
    is quiet, and logs each receiver going down, with the reason (refused, a wrong shared key, ...), and
    coming back."""

    def __init__(self, pool: ForwardPool) -> None:
        self._pool = pool
        self._seen: dict[str, tuple[bool, str | None]] = {}
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Try the receivers now; failures are recorded by the pool and logged by :meth:`check`."""
        self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        with contextlib.suppress(ForwardError):
            await self._pool.connect()
        self.check()

    def check(self) -> None:
        """Let the pool notice idle connections that broke (and reconnect); log what changed since the last call."""
        self._pool.keep_connected()
        for status in self._pool.status():
            name = str(status.receiver)
            now = (status.up, status.last_error)
            if self._seen.get(name) == now:
                continue
            self._seen[name] = now
            if status.up:
                log.info("receiver_connected", receiver=name)
            elif status.last_error:
                log.warning("receiver_down", receiver=name, error=status.last_error)


@click.command("agent")
@follow_options
@receiver_options
@delivery_options
@record_options
@runtime_options
def agent_command(**params: Any) -> None:
    """Follow GLOB... and ship every line to Fluentd/Fluent Bit (Forward protocol), at least once."""
    sys.exit(run_mode(agent_mode(params)))

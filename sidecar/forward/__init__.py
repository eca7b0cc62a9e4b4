"""The Fluentd Forward protocol, sender side: what agent mode ships lines with.

- :mod:`sidecar.forward.protocol` — bytes: EventTime, entries built in bulk, PackedForward messages,
  the shared-key handshake, acks.
- :mod:`sidecar.forward.client` — one connection to one receiver (TLS, handshake, pipelined acks).
- :mod:`sidecar.forward.pool` — ordered failover between receivers with backoff, resending until acked.

Typical use by the agent sink::

    pool = ForwardPool([Receiver.parse("fluentd:24224")], ForwardOptions(shared_key="s3cr3t"), metrics)
    entries, count = pack_line_entries(lines, time.time_ns())
    await pool.send_chunk("app.log", [entries], count)  # returns once acknowledged; empties the list
"""

from sidecar.forward.client import Connection, ForwardOptions, Receiver, TlsOptions
from sidecar.forward.pool import ForwardMetrics, ForwardPool, NullForwardMetrics, ReceiverStatus
from sidecar.forward.protocol import pack_event_time, pack_line_entries, pack_message, pack_record_entries

__all__ = [
    "Connection",
    "ForwardMetrics",
    "ForwardOptions",
    "ForwardPool",
    "NullForwardMetrics",
    "Receiver",
    "ReceiverStatus",
    "TlsOptions",
    "pack_event_time",
    "pack_line_entries",
    "pack_message",
    "pack_record_entries",
]

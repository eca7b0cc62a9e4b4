"""Agent mode: ship followed lines to Fluentd/Fluent Bit over the Forward protocol, at least once.

- :mod:`sidecar.modes.agent.records` — tag templates, per-file record fields, encoding records in bulk.
- :mod:`sidecar.modes.agent.parsers` — ``--parser json|regex|logfmt`` and ``--time-key``.
- :mod:`sidecar.modes.agent.multiline` — stack-trace grouping (presets and ``--multiline-start``).
- :mod:`sidecar.modes.agent.sink` — the Sink: chunks, the in-flight window, commit on ack, drain.
- :mod:`sidecar.modes.agent.cli` — the ``sidecar agent`` command.
"""

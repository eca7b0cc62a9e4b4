"""``make interop``: agent mode end to end against a real Fluent Bit and a real Fluentd.

Neither receiver is in a package registry, so this check is run by hand before a release (not by
``make test``), with the binaries named by ``FLUENT_BIT`` (a ``fluent-bit`` built with ``in_forward`` and
``out_file``) and ``FLUENTD`` (``bin/fluentd`` of a Fluentd checkout, e.g. v1.15.x on Debian bookworm's
Ruby gems). A receiver whose variable is unset is skipped with one line saying so.

- :mod:`interop.receivers` — each receiver's configuration, start/stop, and the records it wrote out.
- :mod:`interop.scenarios` — ``sidecar agent`` through its CLI against one receiver: message modes,
  gzip, acks, TLS, shared key, user auth, chunk sizes around the receiver's limits, a restart.
- :mod:`interop.probes` — chunks of exact payload sizes, to measure where a receiver starts losing.
- :mod:`interop.run` — runs it all and prints one table; exit status 1 when a promise broke.
"""

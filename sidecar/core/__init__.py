"""The follow core: find files, follow each by identity through every rotation, hand complete lines to a sink.

It knows nothing of stdout, Forward or Prometheus: modes plug in through :mod:`sidecar.core.sink`, metrics
through :mod:`sidecar.core.events`.
"""

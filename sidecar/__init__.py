"""log-sidecar: follow an application's log files and stream or ship every line exactly once."""

__version__ = "0.1.0"

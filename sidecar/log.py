"""Diagnostics: one line per event on stderr, as logfmt or JSON.

In stream mode stdout belongs to the application's lines alone, so every word of ours goes to stderr.
Events are named (``file_rotated``) with key=value fields, so that people can grep them and log
pipelines can parse them without regular expressions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_ROOT = "sidecar"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and all(c.isprintable() and c not in ' "=' for c in text):
        return text
    return json.dumps(text)


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields.update(getattr(record, "fields", {}))
        if self._json:
            return json.dumps(fields, default=str)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class EventLogger:
    """A logger whose calls are an event name plus fields: ``log.info("file_opened", path=p)``."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={"fields": fields})

    def enabled_for_debug(self) -> bool:
        """For a debug event whose fields cost something to build: build them only when it is shown."""
        return self._logger.isEnabledFor(logging.DEBUG)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


def get_logger(name: str) -> EventLogger:
    """The event logger for a module (``get_logger(__name__)``)."""
    return EventLogger(logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}"))


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    """Send every diagnostic of the sidecar to stderr, one line per event."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    root.propagate = False

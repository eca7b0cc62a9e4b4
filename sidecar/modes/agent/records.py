"""What one shipped record holds, which tag it travels under, and its msgpack bytes.

Every record of a file carries the same constant fields (the file path, the pod identity from the
Downward API, the static ``--field`` pairs), and every record of a file goes out under the same tag. Both
are therefore worked out once per file (:meth:`RecordShape.for_path`) and not per line. Without a
parser, :class:`Encoder` hands a whole run of lines to
:func:`~sidecar.forward.protocol.pack_line_entries`, which packs the constant part once; only with a
parser is each record built as a dict and packed on its own.
"""

from __future__ import annotations

import bisect
import itertools
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol

import msgpack

from sidecar.errors import ConfigError
from sidecar.forward.protocol import line_entry_overhead, pack_event_time, pack_line_entries, str_header
from sidecar.modes.agent.parsers import Parser, TimeReader

#: Downward API environment variables -> record keys (and tag placeholders).
POD_ENV = {"POD_NAME": "pod", "POD_NAMESPACE": "namespace", "NODE_NAME": "node", "CONTAINER_NAME": "container"}

#: Tag placeholders that depend on the file rather than on the pod.
FILE_PLACEHOLDERS = ("file", "file_stem")

DEFAULT_TAG = "sidecar.{file_stem}"

# Caches are per followed file; a pod with more distinct file paths than this is misconfigured, and
# starting over costs one re-render per file.
_CACHE_LIMIT = 10_000


def pod_identity(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The pod's identity from the Downward API variables that are set (and not empty)."""
    env = os.environ if environ is None else environ
    return {key: env[var] for var, key in POD_ENV.items() if env.get(var)}


def parse_fields(pairs: Sequence[str]) -> dict[str, str]:
    """``--field key=value`` pairs as a dict; the last of a repeated key wins."""
    fields: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--field {pair!r}: expected KEY=VALUE, e.g. --field cluster=prod")
        fields[key.strip()] = value
    return fields


def file_stem(path: str) -> str:
    """The file name without its last suffix: ``/var/log/app.log`` -> ``app``."""
    return PurePath(path).stem


class TagTemplate:
    """A tag with ``{placeholder}`` fields, checked when it is configured rather than when a file shows up.

    Placeholders: ``{file}`` (the file name), ``{file_stem}`` (the name without its last suffix) and the
    pod identity ``{pod}``, ``{namespace}``, ``{node}``, ``{container}``. A pod placeholder whose
    variable is not set is a configuration error too: a tag like ``kube..web`` would be routed silently
    to the wrong place.
    """

    def __init__(self, template: str, pod: Mapping[str, str]) -> None:
        allowed = (*FILE_PLACEHOLDERS, *POD_ENV.values())
        names: list[str] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as error:
            raise ConfigError(f"--tag {template!r}: {error}") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in allowed or spec or conversion:
                raise ConfigError(f"--tag {template!r}: unknown placeholder {{{name}}}; use {', '.join(allowed)}")
            names.append(name)
        missing = [name for name in names if name not in FILE_PLACEHOLDERS and name not in pod]
        if missing:
            env = {key: var for var, key in POD_ENV.items()}
            raise ConfigError(
                f"--tag {template!r} uses {{{missing[0]}}} but {env[missing[0]]} is not set; "
                "expose it with the Downward API or change --tag"
            )
        if not template.strip():
            raise ConfigError("--tag is empty; give a tag such as sidecar.{file_stem}")
        self.template = template
        self._pod = dict(pod)

    def render(self, path: str) -> str:
        """The tag for records of the file at ``path``."""
        name = PurePath(path).name
        return self.template.format(file=name, file_stem=file_stem(name), **self._pod)


@dataclass(frozen=True, slots=True)
class FileShape:
    """The per-file constants: the tag, the fields every record of the file carries, and the bytes an
    unparsed line's entry takes besides the line and its ``str`` header (to size chunks exactly)."""

    tag: str
    fields: dict[str, str]
    entry_overhead: int


class RecordShape:
    """Builds (and caches) the :class:`FileShape` of each followed file.

    ``message_key`` holds the line; ``file_key`` the path (empty string: no path field). A constant
    field named like ``message_key`` is dropped, so that the line is never overwritten and no record map
    carries a key twice.
    """

    def __init__(
        self,
        tag: TagTemplate,
        message_key: str,
        file_key: str,
        static: Mapping[str, str],
        pod: Mapping[str, str],
    ) -> None:
        if not message_key:
            raise ConfigError("--message-key is empty; give the record key for the line, e.g. log")
        self.message_key = message_key
        self._tag = tag
        self._file_key = file_key
        self._constant = {**pod, **static}
        self._constant.pop(message_key, None)
        self._cache: dict[str, FileShape] = {}

    def for_path(self, path: str) -> FileShape:
        """The tag and constant fields of records read from ``path``."""
        shape = self._cache.get(path)
        if shape is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            fields = {self._file_key: path} if self._file_key else {}
            fields.update(self._constant)
            fields.pop(self.message_key, None)
            overhead = line_entry_overhead(self.message_key, fields)
            shape = FileShape(tag=self._tag.render(path), fields=fields, entry_overhead=overhead)
            self._cache[path] = shape
        return shape


class UnparsedCounter(Protocol):
    """Where lines that did not parse are counted (``Metrics.unparsed``)."""

    def unparsed(self, pattern: str) -> None: ...


class Encoder:
    """Records (lines or joined multiline groups, without newlines) -> concatenated Forward entries.

    With a parser, the record is the parsed fields over the file's constant fields (a parsed field wins
    over a constant of the same name: it is the application's data), and the event time comes from
    ``time_reader`` when it finds one. A record that does not parse (or whose fields msgpack cannot
    carry, such as an integer over 64 bits) goes out as ``{message_key: line}`` plus the constant
    fields, and is counted.
    """

    def __init__(
        self,
        message_key: str,
        parser: Parser | None,
        time_reader: TimeReader | None,
        counter: UnparsedCounter,
    ) -> None:
        self._key = message_key
        self._parser = parser
        self._time_reader = time_reader
        self._counter = counter
        # Lines are bytes and go out as msgpack str (like Fluent Bit, not validated as UTF-8); parsed text
        # that kept undecodable bytes as surrogates gets them back the same way.
        self._pack = msgpack.Packer(use_bin_type=False, unicode_errors="surrogateescape").pack

    def encode(
        self, records: list[bytes], shape: FileShape, time_ns: int, pattern: str, max_bytes: int
    ) -> tuple[bytes, int]:
        """Entries for the first of ``records`` that fit in ``max_bytes``, and how many they are.

        ``records`` were read at ``time_ns`` from a file of ``shape``, found by ``pattern``. The entries
        never exceed ``max_bytes``; none fit when the first record alone is larger (count 0).
        """
        parser = self._parser
        if parser is None:
            count = _lines_that_fit(records, shape.entry_overhead, max_bytes)
            if count == 0:
                return b"", 0
            lines = records if count == len(records) else records[:count]
            return pack_line_entries(lines, time_ns, self._key, shape.fields)
        read_time = pack_event_time(time_ns)
        time_reader = self._time_reader
        pack = self._pack
        parts: list[bytes] = []
        room = max_bytes
        for record in records:
            fields = parser(record)
            event_time = read_time
            packed = None
            if fields is not None:
                if time_reader is not None:
                    parsed_ns = time_reader(fields)
                    if parsed_ns is not None:
                        event_time = pack_event_time(parsed_ns)
                try:
                    packed = pack({**shape.fields, **fields})
                except (OverflowError, ValueError):  # an integer over 64 bits, nesting too deep
                    event_time = read_time
            unparsed = packed is None
            if packed is None:
                packed = pack({**shape.fields, self._key: record})
            entry = b"\x92" + event_time + packed
            room -= len(entry)
            if room < 0:
                break
            if unparsed:
                self._counter.unparsed(pattern)
            parts.append(entry)
        return b"".join(parts), len(parts)


def _lines_that_fit(lines: list[bytes], overhead: int, max_bytes: int) -> int:
    """How many of ``lines``, from the first, fit in ``max_bytes`` as entries of ``overhead`` bytes each
    besides the line and its ``str`` header.

    Every line is sized with the header of the longest (headers grow with the length), so the count is
    never too high, at worst a few bytes per line short of exact; the sums run in C, not per line.
    """
    if not lines:
        return 0
    per_line = overhead + len(str_header(max(map(len, lines))))
    if sum(map(len, lines)) + per_line * len(lines) <= max_bytes:
        return len(lines)
    ends = itertools.accumulate(map(per_line.__add__, map(len, lines)))
    return bisect.bisect_right(list(ends), max_bytes)

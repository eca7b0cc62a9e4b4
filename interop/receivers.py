"""The real receivers: a configuration for each setting we test, start and stop, and what they wrote out.

Both write every record they accept as one JSON object per line into files under their output directory
(Fluent Bit's ``out_file`` ``Format plain``, Fluentd's ``out_file`` with the ``json`` format), which is
what the checks count. Stopping is SIGTERM, so each flushes what it acknowledged before it exits: a
record lost across a restart is then the sender's fault, not the receiver's buffer's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0


class InteropError(Exception):
    """A receiver did not start or stop, or a binary is unusable: the run cannot go on."""


@dataclass(frozen=True, slots=True)
class Tls:
    """The receiver's certificate and key (the sidecar trusts the CA that signed them)."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Settings:
    """How a receiver's ``in_forward`` is configured for one scenario.

    ``buffer_chunk_size``/``buffer_max_size`` are Fluent Bit's (bytes; ``None`` keeps its defaults,
    1,024,000 and 6,144,000); Fluentd has no such limits and ignores them.
    """

    tls: Tls | None = None
    shared_key: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    buffer_chunk_size: int | None = None
    buffer_max_size: int | None = None


class Receiver(Protocol):
    """What a scenario needs of a receiver."""

    name: str
    port: int

    def version(self) -> str: ...

    def start(self, settings: Settings) -> None: ...

    def stop(self) -> None: ...

    def records(self, tag: str) -> list[dict[str, object]]: ...


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Process:
    """One receiver process started from a config file, with its log, and the directory it writes into."""

    def __init__(self, name: str, binary: str, work: Path) -> None:
        self.name = name
        self.binary = binary
        self.port = free_port()
        self.work = work
        self.out = work / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = work / f"{name}.log"

    def version(self) -> str:
        """The first line of ``<binary> --version``."""
        return _run_version([self.binary, "--version"])

    def launch(self, argv: list[str]) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.work)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise InteropError(f"{self.name} exited at start: {self.log_tail()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise InteropError(f"{self.name} did not listen on {self.port} within {_START_TIMEOUT:g}s: {self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise InteropError(f"{self.name} ignored SIGTERM for {_STOP_TIMEOUT:g}s") from None

    def log_tail(self, lines: int = 5) -> str:
        text = self._log.read_text(errors="replace") if self._log.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def json_lines(self, pattern: str) -> Iterator[dict[str, object]]:
        for path in sorted(self.out.glob(pattern)):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # empty, or the last line while the receiver is still writing it


def _run_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as error:
        raise InteropError(f"{argv[0]} cannot run: {error}") from None
    first = (done.stdout or done.stderr).strip().splitlines()
    if done.returncode != 0 or not first:
        raise InteropError(f"{' '.join(argv)} failed: {(done.stdout + done.stderr).strip()[-200:]}")
    return first[0].strip()


class FluentBit(_Process):
    """Fluent Bit: ``in_forward`` -> ``out_file`` (``Format plain``: one JSON record per line, a file per tag)."""

    def __init__(self, binary: str, work: Path) -> None:
        super().__init__("fluent-bit", binary, work)

    def start(self, settings: Settings) -> None:
        lines = [
            "[SERVICE]",
            "    Flush     0.2",
            "    Grace     10",
            "    Log_Level info",
            "[INPUT]",
            "    Name          forward",
            "    Listen        127.0.0.1",
            f"    Port          {self.port}",
            "    Self_Hostname interop",
        ]
        if settings.buffer_chunk_size is not None:
            lines.append(f"    Buffer_Chunk_Size {settings.buffer_chunk_size}")
        if settings.buffer_max_size is not None:
            lines.append(f"    Buffer_Max_Size {settings.buffer_max_size}")
        if settings.shared_key is not None:
            lines.append(f"    Shared_Key {settings.shared_key}")
        for user, password in settings.users.items():
            lines.append(f"    Security.Users {user} {password}")
        if settings.tls is not None:
            lines += [
                "    tls          on",
                "    tls.verify   off",
                f"    tls.crt_file {settings.tls.cert}",
                f"    tls.key_file {settings.tls.key}",
            ]
        lines += ["[OUTPUT]", "    Name   file", "    Match  *", f"    Path   {self.out}", "    Format plain"]
        config = self.work / "fluent-bit.conf"
        config.write_text("\n".join(lines) + "\n")
        self.launch([self.binary, "-c", str(config)])

    def records(self, tag: str) -> list[dict[str, object]]:
        return list(self.json_lines(tag))


class Fluentd(_Process):
    """Fluentd: ``in_forward`` -> ``out_file`` (JSON lines, flushed at once, a file per tag)."""

    def __init__(self, binary: str, work: Path) -> None:
        super().__init__("fluentd", binary, work)

    def start(self, settings: Settings) -> None:
        source = ["<source>", "  @type forward", "  bind 127.0.0.1", f"  port {self.port}"]
        if settings.tls is not None:
            source += [
                "  <transport tls>",
                f"    cert_path {settings.tls.cert}",
                f"    private_key_path {settings.tls.key}",
                "  </transport>",
            ]
        if settings.shared_key is not None:
            source += ["  <security>", "    self_hostname interop", f"    shared_key {settings.shared_key}"]
            if settings.users:
                source.append("    user_auth true")
            for user, password in settings.users.items():
                source += ["    <user>", f"      username {user}", f"      password {password}", "    </user>"]
            source.append("  </security>")
        source.append("</source>")
        match = [
            "<match **>",
            "  @type file",
            f"  path {self.out}/${{tag}}",
            "  append true",
            "  <format>",
            "    @type json",
            "  </format>",
            "  <buffer tag>",
            "    @type memory",
            "    flush_mode immediate",
            "    flush_at_shutdown true",
            "  </buffer>",
            "</match>",
        ]
        config = self.work / "fluentd.conf"
        config.write_text("\n".join([*source, *match]) + "\n")
        self.launch([self.binary, "-c", str(config), "--no-supervisor"])

    def records(self, tag: str) -> list[dict[str, object]]:
        return list(self.json_lines(f"{tag}*"))


def receivers_from_env(work: Path) -> tuple[list[Receiver], list[str]]:
    """The receivers ``FLUENT_BIT`` and ``FLUENTD`` name, and one line for each that is missing or unusable."""
    found: list[Receiver] = []
    missing: list[str] = []
    kinds: list[tuple[str, str, type[FluentBit] | type[Fluentd]]] = [
        ("FLUENT_BIT", "a fluent-bit binary built with in_forward and out_file", FluentBit),
        ("FLUENTD", "bin/fluentd of a Fluentd (v1.15.x) checkout", Fluentd),
    ]
    for variable, what, kind in kinds:
        path = os.environ.get(variable, "")
        if not path:
            missing.append(f"{variable} is not set (the path to {what}): skipping it")
        elif not os.access(path, os.X_OK):
            missing.append(f"{variable}={path} is not an executable file: skipping it")
        else:
            found.append(kind(path, work / kind.__name__.lower()))
    return found, missing

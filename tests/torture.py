"""A seeded, randomized, black-box rotation torture: real files, real ``logrotate``, the real CLI.

:func:`scenario` turns a seed into a :class:`Scenario`: 1-3 log files (plain files rotated by the
application itself, files rotated by Debian's ``logrotate`` with random options, or a kubelet-style
symlink whose target is swapped), a glob set (``*.log``, ``*.log*``, one per file), sidecar options
(``--poll-interval``, ``--checkpoint-interval``, ``--rotate-wait``, ``--watch``) and a list of
:class:`Step`: bursts of numbered lines of random sizes, long lines, partial lines completed later,
rename rotations (numbered or dated, some keeping only a few generations), copytruncate, plain
truncate, delete and recreate, ``logrotate -f`` runs, symlink swaps, rename bursts, sleeps of
0-300 ms, and the sidecar stopped (SIGTERM), killed (SIGKILL) or paused (SIGSTOP/SIGCONT, or let run
for 0-20 ms and stopped again, as CPU throttling does).

:class:`Trial` runs one scenario against ``python -m sidecar stream`` and checks that every line
written to every file came out exactly once, in order within each file (:mod:`tests.checker` for the
numbered lines, :func:`check_long` for long ones), that the clean stops exit 0, and that a last
restart repeats nothing.

No loss is acceptable in any scenario, by construction. The runner never destroys bytes the sidecar
could not have read: before a truncate, a delete, a generation deleted to keep N, or a ``logrotate``
run that removes or compresses a file, it waits until the sidecar has delivered every line the
doomed file holds, or (for a file whose inode survives the unlink) follows it: holds it open and has
reported opening it since the inode got its content (a look at a sibling opens it for a moment, and
SIGSTOP may land right then). While the sidecar is paused it is let run for that (``!cont``); while
it is down the destruction is skipped (``!skip``). Every stop first waits until everything written
so far is out (then writes a last burst and stops): what is unread at a stop lies in files at their
followed names. While the sidecar is down a file is rotated only if the state file knows it by inode
and head (``!skip`` otherwise), so no generation is born and rotated away unknown to the state file.
After SIGKILL only the lines not yet out a second before the kill may repeat, and a torn last line
of a killed run is dropped (no process can make a pipe write atomic against SIGKILL); the line
itself must come again whole. Such adjustments appear in the executed step list.

Run many seeds, one trial at a time, one line per seed::

    python -m tests.torture 1000 150            # seeds 1000..1149
    python -m tests.torture 1042 1 --keep -v    # one seed, keep its directory, print its steps

A failing trial keeps its directory (stdout and stderr of every run, ``trial.log`` with the steps and
their times, the state file, the log files).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sidecar.core.identity import FP_BYTES, Fingerprint
from tests.checker import Key, check, split_lines
from tests.conftest import SidecarProcess, read_state
from tests.test_logrotate import LOGROTATE
from tests.writer import LogWriter

Kind = Literal["own", "logrotate", "link"]
State = Literal["running", "paused", "down"]

KILL_AFTER = 1.0
"""A SIGKILL comes this long after the snapshot of what was out: none of that may come out again."""
STUCK_AFTER = 25.0
"""A running sidecar that has not delivered what the runner waits for in this long is stuck (a failure)."""
_LONG = b"LONG "


# --- lines too long for tests.writer's numbered lines ---------------------------------------------


def long_line(stream: str, number: int, size: int) -> bytes:
    """Long line ``number`` of ``stream``: ``LONG <stream> <n> <size> <filler of size bytes>\\n``."""
    seed = hashlib.sha256(f"{stream}/{number}".encode()).hexdigest().encode()
    filler = (seed * (size // len(seed) + 1))[:size]
    return b"LONG %s %08d %d %s\n" % (stream.encode(), number, size, filler)


def long_key(stream: str, number: int) -> Key:
    return (f"{stream}/long", number)


def parse_long(line: bytes) -> tuple[Key, bool] | None:
    """The key of a ``LONG`` line (without its newline) and whether it is intact; None if it is not one."""
    parts = line.split(b" ", 4)
    if len(parts) != 5 or parts[0] != b"LONG" or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    stream, number, size = parts[1].decode(errors="replace"), int(parts[2]), int(parts[3])
    return long_key(stream, number), line + b"\n" == long_line(stream, number, size)


def line_key(line: bytes) -> Key | None:
    """A quick key for a line without its newline (not checking the payload: the final check does)."""
    if line.startswith(_LONG):
        parsed = parse_long(line)
        return None if parsed is None else parsed[0]
    space = line.find(b" ")
    number = line[space + 1 : space + 9]
    if space <= 0 or len(number) != 8 or not number.isdigit():
        return None
    return line[:space].decode(errors="replace"), int(number)


def keys_in(data: bytes) -> set[Key]:
    """Keys of the complete lines in ``data`` (a file's bytes)."""
    end = data.rfind(b"\n")
    found = set()
    for line in data[: end + 1].split(b"\n"):
        key = line_key(line)
        if key is not None:
            found.add(key)
    return found


class TortureWriter(LogWriter):
    """:class:`LogWriter` that also writes long lines and records every line's file (``file_index``)."""

    def __init__(self, path: Path, stream: str) -> None:
        super().__init__(path, stream)
        self.file_index = 0
        self.lines: list[tuple[int, Key]] = []  # (file index, key) of every complete line, in write order
        self.long_written: list[int] = []
        self._long_pending = b""

    def _next_file(self) -> None:
        super()._next_file()
        self.file_index += 1

    def write(self, count: int = 1, *, batch: bool = True) -> range:
        seqs = super().write(count, batch=batch)
        self.lines.extend((self.file_index, (self.stream, seq)) for seq in seqs)
        return seqs

    def finish_partial(self) -> None:
        if self._long_pending:
            self._write_all(self._long_pending)
            self._long_pending = b""
            self._record_long()
            return
        before = len(self.written)
        super().finish_partial()
        if len(self.written) > before:
            self.lines.append((self.file_index, (self.stream, self.written[-1])))

    def write_long(self, size: int, split: int | None = None) -> None:
        """One long line; with ``split``, only its first ``split`` bytes now, the rest at the next write."""
        self.finish_partial()
        line = long_line(self.stream, len(self.long_written), size)
        if split is None:
            self._write_all(line)
            self._record_long()
        else:
            cut = max(1, min(split, len(line) - 1))
            self._write_all(line[:cut])
            self._long_pending = line[cut:]

    def _record_long(self) -> None:
        number = len(self.long_written)
        self.long_written.append(number)
        self.lines.append((self.file_index, long_key(self.stream, number)))

    @property
    def pending(self) -> bool:
        return bool(self._long_pending or self._pending)


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One application log and how it is rotated."""

    name: str
    kind: Kind
    style: Literal["numbered", "dated"] = "numbered"
    keep: int | None = None  # own rotation: generations kept (older ones deleted); None: all
    mode: Literal["create", "copytruncate"] = "create"  # logrotate
    rotate: int = 5
    compress: bool = False
    delaycompress: bool = False

    @property
    def stream(self) -> str:
        return self.name.split(".")[0]

    def __str__(self) -> str:
        if self.kind == "own":
            return f"{self.name}:own/{self.style}/keep{self.keep or '-'}"
        if self.kind == "logrotate":
            z = ("/compress" + ("/delay" if self.delaycompress else "")) if self.compress else ""
            return f"{self.name}:logrotate/{self.mode}/rotate{self.rotate}{z}"
        return f"{self.name}:symlink"


@dataclass(frozen=True)
class Step:
    """One thing the runner does. ``file`` indexes :attr:`Scenario.files`; ``n``/``m`` are per op."""

    op: str
    file: int = 0
    n: int = 0
    m: int = 0
    flag: bool = False

    def __str__(self) -> str:
        f, n, m = self.file, self.n, self.m
        match self.op:
            case "write":
                return f"w{f}:{n}" + ("" if self.flag else "u")
            case "partial":
                return f"p{f}:{n}"
            case "long":
                return f"L{f}:{n}" + (f"/{m}" if m else "")
            case "sleep":
                return f"s{n}"
            case "blip":
                return f"CONT{n}ms"
            case "rename" | "copytruncate" | "logrotate" | "swap" | "target_rename":
                short = {"rename": "rn", "copytruncate": "ct", "logrotate": "lr", "swap": "sw", "target_rename": "rt"}
                return f"{short[self.op]}{f}" + (f"+{n}" if n else "")
            case "truncate":
                return f"tr{f}"
            case "delete":
                return f"rm{f}"
            case "burst":
                return f"B{f}x{n}:{m}"
            case "term" | "kill":
                return f"{self.op.upper()}(w{f}:{n},{m}ms)"
            case _:
                return self.op.upper()


@dataclass(frozen=True)
class Scenario:
    seed: int
    files: tuple[FileSpec, ...]
    globs: tuple[str, ...]  # relative to the log directory
    excludes: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    steps: tuple[Step, ...]

    def describe(self) -> str:
        opts = " ".join(f"{k[2:]}={v}" for k, v in self.options)
        return f"files={','.join(map(str, self.files))} globs={','.join(self.globs)} {opts}"


def _lines(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.55:
        return rng.randint(1, 20)
    if roll < 0.9:
        return rng.randint(20, 600)
    return rng.randint(600, 4000)


def _rotation(rng: random.Random, index: int, spec: FileSpec, running: bool) -> Step:
    late = rng.choice([0, 0, 0, 1, 3, 5])
    if spec.kind == "own":
        op = rng.choices(["rename", "copytruncate", "truncate", "delete"], [6, 3, 2 if running else 0, 2])[0]
    elif spec.kind == "logrotate":
        op = rng.choices(["logrotate", "truncate", "delete"], [8, 2 if running else 0, 2])[0]
    else:
        op = rng.choices(["swap", "target_rename", "truncate"], [6, 3, 1 if running else 0])[0]
    if op in ("truncate", "delete", "copytruncate") or (op == "logrotate" and spec.mode == "copytruncate"):
        late = 0
    return Step(op, index, late)


def scenario(seed: int) -> Scenario:
    """The scenario of ``seed``: files, globs, options and steps (the same on every machine)."""
    rng = random.Random(seed)
    count = rng.choice([1, 1, 2, 2, 2, 3])
    names = ["app.log", "web.log", "db.log"]
    files: list[FileSpec] = []
    for i in range(count):
        kinds: list[Kind] = ["own", "logrotate", "link"]
        kind = rng.choices(kinds, [4, 4, 1 if i == count - 1 else 0])[0]
        if kind == "own":
            files.append(FileSpec(names[i], "own", style=rng.choice(["numbered", "dated"]),
                                  keep=rng.choice([None, None, 2, 3, 5])))
        elif kind == "logrotate":
            compress = rng.random() < 0.6
            files.append(FileSpec(names[i], "logrotate", mode=rng.choice(["create", "copytruncate"]),
                                  rotate=rng.choice([1, 2, 3, 5]), compress=compress,
                                  delaycompress=compress and rng.random() < 0.5))
        else:
            files.append(FileSpec("pod.log", "link"))
    how = rng.choice(["*.log", "*.log*", "each"])
    globs = tuple(f.name + rng.choice(["", "*"]) for f in files) if how == "each" else (how,)
    excludes = ("*.gz",) if any(g.endswith("*") for g in globs) else ()
    options = (
        ("--poll-interval", rng.choice(["0.05s", "0.2s", "0.2s", "0.5s", "1s"])),
        ("--checkpoint-interval", rng.choice(["0.2s", "0.5s", "1s", "2s"])),
        ("--rotate-wait", rng.choice(["0.5s", "1s", "1s", "2s"])),
        ("--watch", rng.choices(["auto", "poll"], [4, 1])[0]),
    )
    steps: list[Step] = [Step("write", i, rng.randint(0, 300), flag=True) for i in range(count) if rng.random() < 0.7]
    steps.append(Step("start"))
    state: State = "running"
    for _ in range(rng.randint(10, 28)):
        weights = {
            "write": 30, "partial": 4, "long": 4, "sleep": 12, "rotate": 20, "burst": 4,
            "pause": 5 if state == "running" else 0,
            "resume": 10 if state == "paused" else 0,
            "blip": 6 if state == "paused" else 0,
            "term": 3 if state != "down" else 0,
            "kill": 2 if state != "down" else 0,
            "start": 14 if state == "down" else 0,
        }
        what = rng.choices(list(weights), list(weights.values()))[0]
        f = rng.randrange(count)
        if what == "write":
            n = _lines(rng)
            steps.append(Step("write", f, n, flag=n > 50 or rng.random() < 0.5))
        elif what == "partial":
            steps.append(Step("partial", f, rng.randint(1, 60)))
        elif what == "long":
            size = rng.choice([rng.randint(300, 5000), rng.randint(5000, 100_000), rng.randint(100_000, 600_000)])
            steps.append(Step("long", f, size, rng.choice([0, 0, rng.randint(1, size)])))
        elif what == "sleep":
            steps.append(Step("sleep", n=rng.choice([0, rng.randint(0, 50), rng.randint(0, 300)])))
        elif what == "rotate":
            steps.append(_rotation(rng, f, files[f], state == "running"))
        elif what == "burst":
            steps.append(Step("burst", f, rng.randint(2, 6), rng.randint(1, 300)))
        elif what == "blip":
            steps.append(Step("blip", n=rng.choice([0, 1, 2, 5, 20])))
        elif what in ("pause", "resume", "start"):
            steps.append(Step(what))
            state = {"pause": "paused", "resume": "running", "start": "running"}[what]  # type: ignore[assignment]
        else:
            steps.append(Step(what, f, rng.choice([0, rng.randint(1, 50), rng.randint(50, 2000)]),
                              rng.choice([0, 0, rng.randint(1, 30)])))
            state = "down"
    return Scenario(seed, tuple(files), globs, excludes, options, tuple(steps))


# --- running one ---------------------------------------------------------------------------------


class Stuck(Exception):
    """A running sidecar did not deliver what the runner waited for."""


class Output:
    """Keys of the complete lines out so far, read incrementally from each run's stdout file."""

    def __init__(self, sc: SidecarProcess) -> None:
        self.sc = sc
        self.seen: Counter[Key] = Counter()
        self._pos: list[int] = []
        self._rest: list[bytes] = []

    def update(self) -> Counter[Key]:
        for i, run in enumerate(self.sc.runs):
            if i == len(self._pos):
                self._pos.append(0)
                self._rest.append(b"")
            try:
                with run.stdout_path.open("rb") as out:
                    out.seek(self._pos[i])
                    data = out.read()
            except FileNotFoundError:
                continue
            self._pos[i] += len(data)
            data = self._rest[i] + data
            cut = data.rfind(b"\n") + 1
            self._rest[i] = data[cut:]
            for line in data[:cut].split(b"\n")[:-1]:
                key = line_key(line)
                if key is not None:
                    self.seen[key] += 1
        return self.seen

    def size(self) -> int:
        return sum(self._pos)


@dataclass
class Kill:
    first_run: int  # runs from this index on are after the kill
    out_before: set[Key]  # out a second before the kill: never again
    written: set[Key]  # written by the kill


@dataclass
class Result:
    seed: int
    ok: bool
    summary: str
    steps: list[str]
    seconds: float
    directory: Path
    scenario: Scenario

    def line(self, width: int = 400) -> str:
        steps = " ".join(self.steps)
        if len(steps) > width:
            steps = steps[: width - 3] + "..."
        return f"{self.seed} {'ok' if self.ok else 'FAIL'} {self.seconds:.1f}s {self.summary} | {steps}"


def _key_of(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Trial:
    """One scenario against the real CLI, in ``directory``."""

    def __init__(self, plan: Scenario, directory: Path) -> None:
        self.plan = plan
        self.dir = directory
        self.logs = directory / "logs"
        self.targets = directory / "targets"
        self.state_dir = directory / "state"
        self.lr_dir = directory / "logrotate"
        for d in (self.logs, self.targets, self.state_dir, self.lr_dir):
            d.mkdir(parents=True)
        self.writers: list[TortureWriter] = []
        self.links: dict[int, Path] = {}
        self.counters: list[int] = []
        for i, spec in enumerate(plan.files):
            if spec.kind == "link":
                writer = TortureWriter(self.targets / f"{spec.stream}-0.log", spec.stream)
                writer.reopen()
                self.links[i] = self.logs / spec.name
                self.links[i].symlink_to(writer.path)
            else:
                writer = TortureWriter(self.logs / spec.name, spec.stream)
            self.writers.append(writer)
            self.counters.append(0)
        args = [str(self.logs / g) for g in plan.globs]
        for ex in plan.excludes:
            args += ["--exclude", ex]
        args += ["--checkpoint-dir", str(self.state_dir), "--metrics-port", "0", "--log-level", "info"]
        for name, value in plan.options:
            args += [name, value]
        self.sc = SidecarProcess(directory / "sidecar", args)
        self.out = Output(self.sc)
        self.state: State = "down"
        self.kills: list[Kill] = []
        self.killed_runs: set[int] = set()
        self.exit_codes: list[str] = []
        self.done: list[str] = []
        self.notes: list[str] = []
        self.harness: list[str] = []
        self.sightings: dict[tuple[int, int], tuple[int, int, bytes]] = {}
        self.began = time.monotonic()
        self._log = (directory / "trial.log").open("w")
        self._log.write(f"seed {plan.seed}: {plan.describe()}\n{' '.join(self.sc.command)}\n")

    # -- bookkeeping

    def note(self, text: str) -> None:
        self.done.append(text)
        self._log.write(f"{time.monotonic() - self.began:8.3f} {time.time():.3f} {text}\n")
        self._log.flush()

    def detail(self, text: str) -> None:
        """A line of ``trial.log`` only (not of the step list)."""
        self._log.write(f"{time.monotonic() - self.began:8.3f} {time.time():.3f}   {text}\n")

    def listing(self) -> None:
        """Every file's name, inode, size and the first and last line it holds, into ``trial.log``."""
        for directory in (self.logs, self.targets):
            for p in sorted(directory.iterdir()):
                try:
                    st = p.stat()
                    data = b"" if p.name.endswith(".gz") else p.read_bytes()
                except OSError:
                    continue
                keys = [k for line in data.split(b"\n") if (k := line_key(line)) is not None]
                span = f"{keys[0][0]}:{keys[0][1]}..{keys[-1][1]} ({len(keys)})" if keys else "-"
                self.detail(f"  {p.name} ino={st.st_ino} size={st.st_size} {span}")

    def all_keys(self) -> set[Key]:
        return {key for w in self.writers for _, key in w.lines}

    def delivered(self, keys: Iterable[Key]) -> bool:
        seen = self.out.update()
        return all(k in seen for k in keys)

    def sight(self) -> None:
        """Note where this run's stderr was when each file (inode and head) was first seen.

        An inode number freed by a delete is soon another file's: a file whose head no longer extends
        the one seen is a new sighting.
        """
        run = len(self.sc.runs) - 1
        offset = self._stderr_size()
        present = set()
        for directory in (self.logs, self.targets):
            for p in directory.iterdir():
                try:
                    st = p.lstat()
                    with p.open("rb") as f:
                        head = f.read(FP_BYTES)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                key = (st.st_dev, st.st_ino)
                present.add(key)
                seen = self.sightings.get(key)
                if seen is None or not head.startswith(seen[2]):
                    self.sightings[key] = (run, offset, head)
                elif len(head) > len(seen[2]):
                    self.sightings[key] = (seen[0], seen[1], head)
        for key in set(self.sightings) - present:
            del self.sightings[key]

    def _stderr_size(self) -> int:
        try:
            return self.sc.runs[-1].stderr_path.stat().st_size if self.sc.runs else 0
        except OSError:
            return 0

    def held(self, path: Path) -> bool:
        """Does the live sidecar follow this file: hold it open, having reported opening it since it was first
        seen? (It also opens siblings for a moment to look at them, and may be stopped right then.)"""
        key = _key_of(path)
        if self.state == "down" or key is None or key not in self.sc.open_files():
            return False
        run, offset, _ = self.sightings.get(key, (len(self.sc.runs) - 1, self._stderr_size(), b""))
        text = self.sc.runs[-1].stderr_path.read_bytes()[offset if run == len(self.sc.runs) - 1 else 0 :]
        return re.search(rb"event=file_opened .*inode=%d\b" % key[1], text) is not None

    def wait(self, ready: Callable[[], bool], what: str, timeout: float = STUCK_AFTER) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.sc.running:
                raise Stuck(f"sidecar exited ({self.sc.proc.returncode}) waiting for {what}")
            if time.monotonic() > deadline:
                raise Stuck(f"not done after {timeout:.0f}s: {what}")
            time.sleep(0.02)

    def known(self, path: Path) -> bool:
        """Does the state file hold this file (by inode, with its head and within its size)?"""
        try:
            st = path.stat()
            with path.open("rb") as f:
                head = f.read(FP_BYTES)
        except OSError:
            return False
        for e in read_state(self.state_dir):
            if (e["dev"], e["ino"]) != (st.st_dev, st.st_ino) or e.get("gone_since") is not None:
                continue
            fp, fp_len, offset = e["fingerprint"], e["fp_len"], e["offset"]
            if (isinstance(fp, str) and isinstance(fp_len, int) and isinstance(offset, int)
                    and Fingerprint(fp, fp_len).matches(head) and offset <= st.st_size):
                return True
        return False

    def safe_to_destroy(self, doomed: Sequence[tuple[Path, bool]], what: str) -> bool:
        """Make destroying ``doomed`` (path, whether its inode survives the unlink) lose nothing.

        Safe once every line of each file is out, or the live sidecar holds it open (for an unlink).
        Running: wait for that. Paused: let it run meanwhile. Down: False (skip the destruction).
        """
        needs: list[tuple[Path, bool, set[Key]]] = []
        for path, survives in doomed:
            try:
                keys = keys_in(path.read_bytes())
            except OSError:
                continue
            needs.append((path, survives, keys))

        def safe() -> bool:
            self.sight()
            seen = self.out.update()
            return all(all(k in seen for k in keys) or (survives and self.held(path)) for path, survives, keys in needs)

        if safe():
            seen = self.out.update()
            self.detail("safe at once: " + ", ".join(
                f"{path.name} {'out' if all(k in seen for k in keys) else 'held'}" for path, _, keys in needs))
            return True
        if self.state == "down":
            self.note(f"!skip({what}:unread)")
            return False
        paused = self.state == "paused"
        if paused:
            self.listing()
            self.sc.resume()
            self.state = "running"
            self.note("!cont")
        self.wait(safe, f"{what}: lines of {[str(p.name) for p, _, _ in needs]} out or held")
        if paused:
            self.sc.pause()
            self.state = "paused"
            self.note("!stop")
        seen = self.out.update()
        self.detail("safe: " + ", ".join(
            f"{path.name} {'out' if all(k in seen for k in keys) else 'held'}" for path, _, keys in needs))
        return True

    def may_rotate(self, path: Path, what: str) -> bool:
        """While down, only files the state file knows are rotated (see the module docstring)."""
        if not path.exists():
            self.note(f"!skip({what}:absent)")
            return False
        if self.state == "down" and not self.known(path):
            self.note(f"!skip({what}:unknown)")
            return False
        return True

    # -- the application's side

    def rotate_names(self, i: int) -> tuple[Path, list[Path]]:
        """The next generation's name for file ``i`` (shifting numbered ones), and what keeping N deletes."""
        spec, writer = self.plan.files[i], self.writers[i]
        path = writer.path
        if spec.style == "dated":
            self.counters[i] += 1
            dest = path.with_name(f"{path.name}-{self.counters[i]:06d}")
            gens = sorted(p for p in path.parent.glob(f"{path.name}-*") if not p.name.endswith(".gz"))
            doomed = gens[: max(0, len(gens) + 1 - spec.keep)] if spec.keep else []
            if doomed and not self.safe_to_destroy([(p, True) for p in doomed], f"expire{i}"):
                doomed = []
            for p in doomed:
                p.unlink()
            return dest, doomed
        numbers = sorted((int(p.name.rsplit(".", 1)[1]) for p in path.parent.glob(f"{path.name}.*")
                          if p.name.rsplit(".", 1)[1].isdigit()), reverse=True)
        doomed = [path.with_name(f"{path.name}.{k}") for k in numbers if spec.keep and k >= spec.keep]
        if doomed and not self.safe_to_destroy([(p, True) for p in doomed], f"expire{i}"):
            doomed = []
        for k in numbers:
            old = path.with_name(f"{path.name}.{k}")
            if old in doomed:
                old.unlink()
            else:
                old.rename(path.with_name(f"{path.name}.{k + 1}"))
        return path.with_name(f"{path.name}.1"), doomed

    def rename(self, i: int, late: int) -> None:
        writer = self.writers[i]
        writer.finish_partial()
        if not self.may_rotate(writer.path, f"rn{i}"):
            return
        dest, _ = self.rotate_names(i)
        writer.rename_rotate(dest, late_lines=late)

    def copytruncate(self, i: int) -> None:
        writer = self.writers[i]
        writer.finish_partial()
        if not self.may_rotate(writer.path, f"ct{i}"):
            return
        dest, _ = self.rotate_names(i)
        writer.copytruncate(dest)
        time.sleep(0.012)  # a copy and a later rename of the file within one tick of the file clock: see test_model

    def truncate(self, i: int) -> None:
        writer = self.writers[i]
        writer.finish_partial()
        if writer.path.exists() and self.safe_to_destroy([(writer.path, False)], f"tr{i}"):
            writer.truncate()

    def delete(self, i: int) -> None:
        writer = self.writers[i]
        writer.finish_partial()
        if writer.path.exists() and self.safe_to_destroy([(writer.path, True)], f"rm{i}"):
            writer.delete()

    def logrotate(self, i: int, late: int) -> None:
        spec, writer = self.plan.files[i], self.writers[i]
        writer.finish_partial()
        path = writer.path
        if not self.may_rotate(path, f"lr{i}"):
            return
        doomed: list[tuple[Path, bool]] = []
        oldest = path.with_name(f"{path.name}.{spec.rotate}")
        if oldest.exists():
            doomed.append((oldest, True))
        if spec.compress and spec.delaycompress and path.with_name(f"{path.name}.1").exists():
            doomed.append((path.with_name(f"{path.name}.1"), True))
        if spec.compress and not spec.delaycompress:
            doomed.append((path, spec.mode == "create"))  # a copy is a new file, gzipped at once
        if doomed and not self.safe_to_destroy(doomed, f"lr{i}"):
            return
        allowed = {k for p, _ in doomed if (k := _key_of(p)) is not None}
        before = self._plain_files(path)
        followed = self.held(path)  # late lines into a file gzip deleted reach only a sidecar holding it
        directives = [spec.mode, f"rotate {spec.rotate}", "compress" if spec.compress else "nocompress",
                      *(["delaycompress"] if spec.delaycompress else []), "missingok"]
        self.counters[i] += 1
        config = self.lr_dir / f"{spec.stream}-{self.counters[i]}.conf"
        config.write_text(f"{path} {{\n" + "".join(f"    {d}\n" for d in directives) + "}\n")
        done = subprocess.run([LOGROTATE, "-s", str(self.lr_dir / f"{spec.stream}.state"), "-f", str(config)],
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            self.harness.append(f"logrotate failed: {done.stderr.strip()[:200]}")
        after = self._plain_files(path)
        for key, p in before.items():
            if key not in after and key not in allowed:
                self.harness.append(f"logrotate removed {p.name} unforeseen")
        if spec.mode == "create":
            if late and os.fstat(writer.fd).st_nlink == 0 and not followed:
                self.note(f"!late0(lr{i})")
                late = 0
            writer.write(late)
            writer.reopen()
        time.sleep(0.012)

    def _plain_files(self, path: Path) -> dict[tuple[int, int], Path]:
        found = {}
        for p in [path, *path.parent.glob(f"{path.name}.*")]:
            key = _key_of(p)
            if key is not None and not p.name.endswith(".gz"):
                found[key] = p
        return found

    def swap(self, i: int, late: int) -> None:
        writer = self.writers[i]
        writer.finish_partial()
        if not self.may_rotate(writer.path, f"sw{i}"):
            return
        self.counters[i] += 1
        target = self.targets / f"{self.plan.files[i].stream}-{self.counters[i]}.log"
        target.touch()
        temp = self.links[i].with_name(f".{self.links[i].name}.tmp")
        temp.symlink_to(target)
        os.replace(temp, self.links[i])
        writer.write(late)
        writer.path = target
        writer.reopen()

    def target_rename(self, i: int, late: int) -> None:
        writer = self.writers[i]
        writer.finish_partial()
        if not self.may_rotate(writer.path, f"rt{i}"):
            return
        self.counters[i] += 1
        writer.rename_rotate(writer.path.with_name(f"{writer.path.name}.{self.counters[i]:04d}"), late_lines=late)

    def rotate(self, step: Step) -> None:
        i, late = step.file, step.n
        match step.op:
            case "rename":
                self.rename(i, late)
            case "copytruncate":
                self.copytruncate(i)
            case "truncate":
                self.truncate(i)
            case "delete":
                self.delete(i)
            case "logrotate":
                self.logrotate(i, late)
            case "swap":
                self.swap(i, late)
            case "target_rename":
                self.target_rename(i, late)

    def burst(self, i: int, rotations: int, lines: int) -> None:
        op = {"own": "rename", "logrotate": "logrotate", "link": "swap"}[self.plan.files[i].kind]
        for _ in range(rotations):
            seqs = self.writers[i].write(lines)
            self.detail(f"burst {op}{i} after {seqs.start}..{seqs.stop - 1}")
            self.rotate(Step(op, i))
            self.sight()
            time.sleep(0.002)
        self.writers[i].write(lines)

    # -- the sidecar's side

    def start(self) -> None:
        if self.state != "down":
            return
        self.sc.start()
        self.state = "running"

    def resume(self) -> None:
        if self.state == "paused":
            self.sc.resume()
            self.state = "running"

    def stop(self, step: Step) -> None:
        if self.state == "down":
            return
        if self.state == "paused":
            self.resume()
            self.note("!cont")
        everything = self.all_keys()
        self.wait(lambda: self.delivered(everything), f"all {len(everything)} lines out before {step.op}")
        writer = self.writers[step.file]
        if step.op == "kill":
            out = set(self.out.update())
            time.sleep(KILL_AFTER)
            writer.write(step.n)
            time.sleep(step.m / 1000)
            self.killed_runs.add(len(self.sc.runs) - 1)
            self.sc.kill()
            self.kills.append(Kill(len(self.sc.runs), out, self.all_keys()))
        else:
            writer.write(step.n)
            time.sleep(step.m / 1000)
            code = self.sc.stop()
            if code != 0:
                self.exit_codes.append(f"run {len(self.sc.runs) - 1} exited {code} after SIGTERM")
        self.state = "down"

    # -- the whole trial

    def step(self, step: Step) -> None:
        w = self.writers[step.file]
        match step.op:
            case "write":
                w.write(step.n, batch=step.flag)
            case "partial":
                w.write_partial(step.n)
            case "long":
                w.write_long(step.n, step.m or None)
            case "sleep":
                time.sleep(step.n / 1000)
            case "burst":
                self.burst(step.file, step.n, step.m)
            case "start":
                self.start()
            case "pause":
                if self.state == "running":
                    self.sc.pause()
                    self.state = "paused"
            case "resume":
                self.resume()
            case "blip":
                if self.state == "paused":  # a CPU-throttled pod: runs a moment, stopped again
                    self.sc.resume()
                    time.sleep(step.n / 1000)
                    self.sc.pause()
            case "term" | "kill":
                self.stop(step)
            case _:
                self.rotate(step)

    def run(self) -> Result:
        stuck = ""
        try:
            for step in self.plan.steps:
                self.note(str(step))
                self.step(step)
                self.sight()
                if step.op not in ("write", "partial", "long", "sleep"):
                    self.detail(" ".join(f"{w.stream}:next={w.next_seq}" for w in self.writers) + f" {self.state}")
                    self.listing()
            self.finish()
        except Stuck as exc:
            stuck = str(exc)
            self.note(f"!stuck: {stuck}")
        finally:
            self.sc.cleanup()
            for w in self.writers:
                w.close()
        return self.verdict(stuck)

    def finish(self) -> None:
        """Let it catch up, stop cleanly, start again (nothing may come out) and stop."""
        self.note("FINISH")
        self.resume()
        self.start()
        for w in self.writers:
            w.finish_partial()
        everything = self.all_keys()
        self.wait(lambda: self.delivered(everything), f"all {len(everything)} lines out at the end", timeout=40)
        self.quiet(1.5)
        code = self.sc.stop()
        if code != 0:
            self.exit_codes.append(f"final run exited {code} after SIGTERM")
        self.state = "down"
        self.note("RESTART")
        self.start()
        self.quiet(1.0)
        code = self.sc.stop()
        if code != 0:
            self.exit_codes.append(f"restart exited {code} after SIGTERM")
        self.state = "down"

    def quiet(self, seconds: float) -> None:
        """Wait until the output has not grown for ``seconds``: a late repeat has time to show."""
        last, since = -1, time.monotonic()
        deadline = since + 15
        while time.monotonic() < deadline:
            self.out.update()
            size = self.out.size()
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
            time.sleep(0.05)

    def outputs(self) -> list[bytes]:
        """Each run's stdout; a killed run's torn last line (no newline) is dropped and noted."""
        runs = []
        for index, run in enumerate(self.sc.runs):
            data = run.stdout_path.read_bytes() if run.stdout_path.exists() else b""
            if index in self.killed_runs and data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                self.notes.append(f"run {index} torn at SIGKILL ({len(data) - cut} bytes dropped)")
                data = data[:cut]
            runs.append(data)
        return runs

    def verdict(self, stuck: str) -> Result:
        runs = self.outputs()
        output = b"".join(runs)
        normal, longs = split_long(output)
        may_duplicate: dict[str, set[int]] = {}
        for kill in self.kills:
            for stream, seq in kill.written - kill.out_before:
                may_duplicate.setdefault(stream, set()).add(seq)
        report = check(
            normal,
            {w.stream: w.written for w in self.writers},
            may_duplicate=may_duplicate,
            files={w.stream: w.files for w in self.writers},
        )
        problems = [*self.exit_codes, *check_long(longs, self.writers, may_duplicate)]
        problems += order_across_kinds(output, self.writers)
        for number, kill in enumerate(self.kills):
            later = Counter(k for data in runs[kill.first_run :] for line in split_lines(data)
                            if (k := line_key(line)) is not None)
            again = sorted(k for k in kill.out_before if later[k])
            if again:
                shown = ", ".join(f"{s}:{n}" for s, n in again[:6])
                problems.append(f"{len(again)} lines out 1s before kill #{number + 1} came again [{shown}]")
        if stuck:
            problems.append(f"stuck: {stuck}")
        tracebacks = self.sc.stderr().count("Traceback") + self.sc.stderr().count("event=task_failed")
        if tracebacks:
            problems.append(f"{tracebacks} tracebacks on stderr")
        ok = report.ok and not problems
        summary = " ".join([report.summary(), *problems, *self.notes])
        if not ok and self.harness:
            summary = "HARNESS? " + "; ".join(self.harness) + " " + summary
        self._log.write(f"verdict: {'ok' if ok else 'FAIL'} {summary}\n")
        self._log.close()
        return Result(self.plan.seed, ok, summary, self.done, time.monotonic() - self.began, self.dir, self.plan)


def split_long(output: bytes) -> tuple[bytes, list[bytes]]:
    """The output without its ``LONG`` lines (for :func:`tests.checker.check`), and those lines."""
    if _LONG not in output:
        return output, []
    normal: list[bytes] = []
    longs: list[bytes] = []
    for line in split_lines(output):
        (longs if line.startswith(_LONG) else normal).append(line)
    tail = b"" if output.endswith(b"\n") else b"<no newline at the end>"
    return b"".join(line + b"\n" for line in normal) + tail, longs


def check_long(
    lines: Sequence[bytes], writers: Sequence[TortureWriter], may_duplicate: dict[str, set[int]]
) -> list[str]:
    """Long lines: each written one exactly once (or as a kill allows), intact."""
    counts: Counter[Key] = Counter()
    corrupted = 0
    for line in lines:
        parsed = parse_long(line)
        if parsed is None or not parsed[1]:
            corrupted += 1
        else:
            counts[parsed[0]] += 1
    wanted = {long_key(w.stream, n) for w in writers for n in w.long_written}
    lost = sorted(wanted - set(counts))
    dup = sorted(k for k, c in counts.items() if c > 1 and k[1] not in may_duplicate.get(k[0], set()))
    problems = []
    if lost:
        problems.append(f"long lost={len(lost)} {lost[:4]}")
    if dup:
        problems.append(f"long duplicated={len(dup)} {dup[:4]}")
    if corrupted:
        problems.append(f"long corrupted={corrupted}")
    unexpected = sorted(set(counts) - wanted)
    if unexpected:
        problems.append(f"long unexpected={len(unexpected)} {unexpected[:4]}")
    return problems


def order_across_kinds(output: bytes, writers: Sequence[TortureWriter]) -> list[str]:
    """Order within each file over long and numbered lines together (the checker judges numbered ones)."""
    position: dict[Key, tuple[str, int, int]] = {}
    for w in writers:
        for index, (file_index, key) in enumerate(w.lines):
            position[key] = (w.stream, file_index, index)
    if not any(k[0].endswith("/long") for k in position):
        return []
    seen: set[Key] = set()
    top: dict[tuple[str, int], tuple[int, Key]] = {}
    bad: list[str] = []
    for line in split_lines(output):
        found = line_key(line)
        if found is None or found in seen or found not in position:
            continue
        key = found
        seen.add(key)
        stream, file_index, index = position[key]
        best = top.get((stream, file_index))
        if best is not None and best[0] > index:
            if key[0].endswith("/long") or best[1][0].endswith("/long"):
                bad.append(f"{key[0]}:{key[1]} after {best[1][0]}:{best[1][1]}")
        else:
            top[(stream, file_index)] = (index, key)
    return [f"long out_of_order={len(bad)} [{', '.join(bad[:4])}]"] if bad else []


def run_trial(seed: int, base: Path) -> Result:
    """Run the scenario of ``seed`` in a new directory under ``base``."""
    directory = base / f"seed-{seed}"
    if directory.exists():
        shutil.rmtree(directory)
    return Trial(scenario(seed), directory).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run torture trials, one at a time, one line per seed.")
    parser.add_argument("start", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--dir", type=Path, help="where trials run (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the directories of passing trials too")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each scenario's files and options")
    args = parser.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="torture-"))
    base.mkdir(parents=True, exist_ok=True)
    failed = 0
    for seed in range(args.start, args.start + args.count):
        result = run_trial(seed, base)
        if args.verbose:
            print(f"# {seed}: {result.scenario.describe()}")
        print(result.line(), flush=True)
        if result.ok and not args.keep:
            shutil.rmtree(result.directory, ignore_errors=True)
        failed += not result.ok
    print(f"# {args.count} trials, {args.count - failed} ok, {failed} failed; directories under {base}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())

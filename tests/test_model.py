"""A model-based test: random writes, rotations, bursts, symlink swaps, restarts and kills against ``sidecar stream``.

Hypothesis picks a short sequence of operations on one application log and applies them to real
files while the real CLI runs as a child process (sometimes SIGSTOPped, so that it falls behind the
operations, as in a CPU-throttled pod). The sidecar follows one exact path: the log file itself
(``logs/app.log``), or, kubelet style, a symlink to it (``links/app.log``) that a swap repoints at a
new target. Rotated generations sit beside their file under names no configured path matches, so
they are found by identity only. The model remembers which numbered lines were written and which
of them the rules of the game let go missing or appear twice:

- exactly once is the rule;
- a line may repeat only if it was written before a SIGKILL, and a line that was out a second before
  a kill never comes out again after it (the checkpoint lags by well under a second, even in a life
  shorter than ``--checkpoint-interval``, which is left at its default of 1 s);
- a line may be missing only if its bytes were destroyed before the sidecar could have read them:
  truncated in place; its file deleted while the sidecar neither held it open nor was running
  unpaused (a running sidecar opens a file on its create event, so a generation deleted
  milliseconds later is still read); or, while the sidecar was down, its generation renamed,
  copytruncated or swapped away unknown to the state file. While the sidecar runs, paused or not,
  no rename, copy or swap loses anything: every generation is beside its file, every copy holds its
  bytes, every old target keeps its own.

What the sidecar "knows" is read from the outside: ``/proc/<pid>/fd`` while it runs, and what it held
when it was last stopped while it is down.

Bounded for CI: 15 examples of at most 8 steps, no shrinking (each step is real processes and files).
To explore longer: ``MODEL_EXAMPLES=200 MODEL_STEPS=20 pytest tests/test_model.py --timeout 1800``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from tests.checker import check, parse
from tests.conftest import FAST_DEFAULTS, SidecarProcess, with_defaults
from tests.writer import LogWriter

STREAM = "m"
KILL_AFTER = 1.0
"""A kill comes this long after the lines that must not repeat were out."""


def _key(path: Path) -> tuple[int, int]:
    st_ = path.stat()
    return st_.st_dev, st_.st_ino


class FollowModel(RuleBasedStateMachine):
    """One application log, one sidecar, and what must come out of it."""

    base: Path  # set by the test before Hypothesis builds machines

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=self.base))
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.checkpoint_dir = self.dir / "state"
        self.writer = LogWriter(self.logs / "app.log", STREAM)
        self.followed = self.writer.path
        self.via_link = False
        self.generation: list[int] = []  # lines in the file the writer writes to
        self.rotated: dict[Path, list[int]] = {}  # lines in each file beside it, by name
        self.exists = False
        self.rotations = 0
        self.may_lose: set[int] = set()
        self.may_duplicate: set[int] = set()
        self.never_again: list[tuple[int, set[int]]] = []  # (first run after a kill, lines out before it)
        self.known_when_down: set[tuple[int, int]] = set()  # (dev, ino) held when last stopped
        self.copied_while_down: list[Path] = []  # copies of the current file made since the last stop
        self.written_at_kill = 0
        self.paused = False
        self.sidecar: SidecarProcess | None = None

    @initialize(via_link=st.booleans())
    def start_following(self, via_link: bool) -> None:
        self.via_link = via_link
        if via_link:
            links = self.dir / "links"
            links.mkdir()
            self.followed = links / "app.log"
            self.writer.reopen()  # the runtime creates the container's log before the kubelet links it
            self.followed.symlink_to(self.writer.path)
            self.exists = True
        args = with_defaults(
            [str(self.followed)],
            {
                "--checkpoint-dir": str(self.checkpoint_dir),
                **FAST_DEFAULTS,
                "--rotate-wait": "0.5s",
                "--checkpoint-interval": "1s",
            },
        )
        self.sidecar = SidecarProcess(self.dir / "sidecar", args).start()

    @property
    def sc(self) -> SidecarProcess:
        assert self.sidecar is not None
        return self.sidecar

    # -- what the sidecar knows ---------------------------------------------------------------

    def _observed(self) -> set[int]:
        counts, _, _ = parse(self.sc.output(), [STREAM])
        return {seq for _, seq in counts}

    def _knows(self, path: Path) -> bool:
        """Does the sidecar hold this file open (running), or did it when it was last stopped (down)?

        Down, the model's own record is used rather than the state file: inodes freed by deletes are
        reused by new files, which the state file's fingerprints tell apart and a bare inode cannot.
        """
        key = _key(path)
        return key in (self.sc.open_files() if self.sc.running else self.known_when_down)

    def _forget(self, path: Path) -> None:
        """The file is deleted: its inode may come back as another file."""
        self.known_when_down.discard(_key(path))

    def _may_lose_unread(self, lines: list[int]) -> None:
        self.may_lose |= set(lines) - self._observed()

    def _moved_away(self, path: Path, lines: list[int]) -> None:
        """``lines`` left the followed name for a file beside it: only a sidecar that is down and never
        knew the file may miss them."""
        if not self.sc.running and not self._knows(path):
            self._may_lose_unread(lines)

    def _append(self, before: int) -> None:
        added = self.writer.written[before:]
        self.generation.extend(added)
        self.exists = self.exists or bool(added)

    def _finish_partial(self) -> None:
        before = len(self.writer.written)
        self.writer.finish_partial()
        self._append(before)

    def _next_name(self) -> Path:
        self.rotations += 1
        return self.writer.path.with_name(f"{self.writer.path.name}.{self.rotations}")

    # -- the application ----------------------------------------------------------------------

    @rule(count=st.integers(1, 40), batch=st.booleans())
    def write(self, count: int, batch: bool) -> None:
        before = len(self.writer.written)
        self.writer.write(count, batch=batch)
        self._append(before)

    @rule(nbytes=st.integers(1, 30))
    def write_partial(self, nbytes: int) -> None:
        self._finish_partial()
        self.writer.write_partial(nbytes)
        self.exists = True

    def _rename(self, late: int) -> Path:
        self._finish_partial()
        dest = self._next_name()
        before = len(self.writer.written)
        self.writer.rename_rotate(dest, late_lines=late)
        self.rotated[dest] = self.generation + self.writer.written[before:]  # the late lines went there
        self._moved_away(dest, self.rotated[dest])
        self.generation = []
        return dest

    @precondition(lambda self: self.exists)
    @rule(late=st.integers(0, 5))
    def rename_rotate(self, late: int) -> None:
        self._rename(late)

    @precondition(lambda self: self.exists)
    @rule(count=st.integers(3, 12), keep=st.integers(3, 5), lines=st.integers(1, 60))
    def rename_burst(self, count: int, keep: int, lines: int) -> None:
        """Size-based rotation under load: a rename every ~3 ms, generations beyond ``keep`` deleted."""
        kept: list[Path] = []
        for _ in range(count):
            self.write(lines, batch=True)
            kept.append(self._rename(0))
            if len(kept) > keep:
                self._delete_rotated(kept.pop(0))
            time.sleep(0.003)

    def _delete_rotated(self, path: Path) -> None:
        held = self.sc.running and self._knows(path)
        if not held and (self.paused or not self.sc.running):
            self._may_lose_unread(self.rotated[path])
        self._forget(path)
        path.unlink()
        del self.rotated[path]

    @precondition(lambda self: self.exists)
    @rule()
    def copytruncate(self) -> None:
        """logrotate's copytruncate. It takes at least one tick of the file clock (~4 ms): a copy and a rename
        of the same file within one tick, while the sidecar cannot look, are ordered by name alone, which
        cannot tell a copy from the generation copied."""
        self._finish_partial()
        self._moved_away(self.writer.path, self.generation)
        dest = self._next_name()
        self.writer.copytruncate(dest)
        self.rotated[dest] = self.generation
        if not self.sc.running:
            self.copied_while_down.append(dest)
        self.generation = []
        time.sleep(0.01)

    @precondition(lambda self: self.exists)
    @rule()
    def truncate(self) -> None:
        self._finish_partial()
        self._may_lose_unread(self.generation)
        self.writer.truncate()
        self.generation = []

    @precondition(lambda self: self.exists and not self.via_link)  # the kubelet removes link and target together
    @rule()
    def delete(self) -> None:
        self._finish_partial()
        if not (self.sc.running and self._knows(self.writer.path)):
            self._may_lose_unread(self.generation)
        if not self.sc.running:  # a copy is found by the original's head and offset: gone with it
            for copy in self.copied_while_down:
                self._may_lose_unread(self.rotated.get(copy, []))
        self._forget(self.writer.path)
        self.writer.delete()
        self.generation = []
        self.exists = False

    @precondition(lambda self: self.via_link)
    @rule(late=st.integers(0, 5))
    def swap_link(self, late: int) -> None:
        """The container restarts: the link moves to a new, empty target; the old one may get last words."""
        self._finish_partial()
        late = late if self.exists else 0  # a deleted target gets no last words
        old = self.writer.path
        self.rotations += 1
        target = self.logs / f"c{self.rotations}.log"
        target.touch()
        swap = self.followed.with_name(".app.log.tmp")
        swap.symlink_to(target)
        os.replace(swap, self.followed)
        before = len(self.writer.written)
        self.writer.write(late)
        if self.exists:
            self.rotated[old] = self.generation + self.writer.written[before:]
            self._moved_away(old, self.rotated[old])
        self.writer.path = target
        self.writer.reopen()
        self.generation = []
        self.exists = True

    # -- the sidecar --------------------------------------------------------------------------

    @precondition(lambda self: self.sc.running and not self.paused)
    @rule()
    def pause(self) -> None:
        """SIGSTOP: the sidecar falls behind (a CPU-throttled pod) while the next operations happen."""
        self.sc.pause()
        self.paused = True

    @precondition(lambda self: self.paused)
    @rule()
    def resume(self) -> None:
        self.sc.resume()
        self.paused = False

    @precondition(lambda self: self.sc.running and not self.paused)
    @rule()
    def stop(self) -> None:
        linked = {_key(path) for path in self.logs.iterdir()}  # deleted files it still held free their inode
        self.known_when_down = self.sc.open_files() & linked
        self.copied_while_down = []
        assert self.sc.stop() == 0, self.sc.stderr()

    @precondition(lambda self: not self.sc.running)
    @rule()
    def start(self) -> None:
        self.sc.start()

    @precondition(lambda self: self.sc.running and not self.paused and self.written_at_kill < len(self.writer.written))
    @rule()
    def kill_and_start(self) -> None:
        """SIGKILL a second after taking note of what was out: none of that may come out again.

        Only once lines were written since the last kill: each kill costs a second, and a kill with
        nothing new to checkpoint adds little to the one before.
        """
        self.written_at_kill = len(self.writer.written)
        out = self._observed()
        time.sleep(KILL_AFTER)
        self.sc.kill()
        self.may_duplicate |= set(self.writer.written)
        self.never_again.append((len(self.sc.runs), out))
        self.sc.start()

    # -- the verdict --------------------------------------------------------------------------

    def _repeated_after_kills(self) -> list[str]:
        """Lines out a second before a kill that came out again in a later run."""
        found = []
        for first_run, out in self.never_again:
            later = b"".join(run.stdout_path.read_bytes() for run in self.sc.runs[first_run:])
            counts, _, _ = parse(later, [STREAM])
            again = sorted(out & {seq for _, seq in counts})
            if again:
                found.append(f"{len(again)} lines out before kill #{first_run} repeated after it: {again[:8]}")
        return found

    def teardown(self) -> None:
        if self.sidecar is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        try:
            if self.paused:
                self.resume()
            if not self.sc.running:
                self.sc.start()
            self._finish_partial()
            must = set(self.writer.written) - self.may_lose
            self.sc.settle({STREAM: must}, quiet=2.0)
            assert self.sc.stop() == 0, self.sc.stderr()
            report = check(
                self.sc.output(),
                {STREAM: self.writer.written},
                may_lose={STREAM: self.may_lose},
                may_duplicate={STREAM: self.may_duplicate},
                files={STREAM: self.writer.files},
            )
            assert report.ok, f"{report.summary()}\n{self.sc.stderr()}"
            repeated = self._repeated_after_kills()
            assert not repeated, f"{repeated}; {report.summary()}\n{self.sc.stderr()}"
        finally:
            self.sc.cleanup()
            self.writer.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def test_random_rotations_restarts_and_kills_deliver_every_line_once(tmp_path: Path) -> None:
    FollowModel.base = tmp_path
    run_state_machine_as_test(
        FollowModel,
        settings=settings(
            max_examples=int(os.environ.get("MODEL_EXAMPLES", "15")),
            stateful_step_count=int(os.environ.get("MODEL_STEPS", "8")),
            deadline=None,
            phases=(Phase.explicit, Phase.reuse, Phase.generate),
            suppress_health_check=list(HealthCheck),
        ),
    )

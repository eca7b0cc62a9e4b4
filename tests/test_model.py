"""A model-based test: random writes, rotations, restarts and kills against the real ``sidecar stream``.

Hypothesis picks a short sequence of operations on one application log (``app.log``, followed by that
exact name, so rotated generations are found by identity only) and applies them to real files while
the real CLI runs as a child process (sometimes SIGSTOPped, so that it falls behind the operations,
as in a CPU-throttled pod). The model remembers which numbered lines were written and which
of them the rules of the game let go missing or appear twice:

- exactly once is the rule;
- a line may repeat only if it was written before a SIGKILL (the checkpoint lags by one interval);
- a line may be missing only if its bytes were destroyed before the sidecar could have read them:
  truncated in place, or its generation deleted, renamed or copytruncated while the sidecar did not
  know it (held no descriptor on it, had it in no state file, or for copytruncate had read none of
  its content yet, so it could not recognise the copy).

What the sidecar "knows" is read from the outside: ``/proc/<pid>/fd`` while it runs, the state file
while it is down. Before a SIGKILL the test waits for a state file written after the last operation,
so that "the checkpoint lags" means lines, never whole files.

Bounded for CI: 15 examples of at most 8 steps, no shrinking (each step is real processes and files).
To explore longer: ``MODEL_EXAMPLES=200 MODEL_STEPS=20 pytest tests/test_model.py --timeout 1800``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from tests.checker import check, parse
from tests.conftest import FAST_DEFAULTS, SidecarProcess, read_state, with_defaults
from tests.writer import LogWriter

STREAM = "m"


class FollowModel(RuleBasedStateMachine):
    """One application log, one sidecar, and what must come out of it."""

    base: Path  # set by the test before Hypothesis builds machines

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=self.base))
        logs = self.dir / "logs"
        logs.mkdir()
        self.checkpoint_dir = self.dir / "state"
        self.app = logs / "app.log"
        self.writer = LogWriter(self.app, STREAM)
        self.generation: list[int] = []  # lines in the file now at app.log
        self.exists = False
        self.rotations = 0
        self.may_lose: set[int] = set()
        self.may_duplicate: set[int] = set()
        self.last_change = time.time()
        self.paused = False
        args = with_defaults(
            [str(self.app)], {"--checkpoint-dir": str(self.checkpoint_dir), **FAST_DEFAULTS, "--rotate-wait": "0.5s"}
        )
        self.sidecar = SidecarProcess(self.dir / "sidecar", args).start()

    # -- what the sidecar knows ---------------------------------------------------------------

    def _observed(self) -> set[int]:
        counts, _, _ = parse(self.sidecar.output(), [STREAM])
        return {seq for _, seq in counts}

    def _known_inode(self) -> bool:
        """Does the sidecar hold app.log's inode open (running) or in its state file (down)?"""
        st_ = self.app.stat()
        if self.sidecar.running:
            return (st_.st_dev, st_.st_ino) in self.sidecar.open_files()
        return any(e["dev"] == st_.st_dev and e["ino"] == st_.st_ino for e in read_state(self.checkpoint_dir))

    def _unless_known(self, known: bool) -> None:
        """The current generation goes away: its unread lines may be lost if the sidecar did not know it."""
        if not known:
            self.may_lose |= set(self.generation) - self._observed()

    def _append(self, before: int) -> None:
        self.generation.extend(self.writer.written[before:])
        self.exists = True
        self.last_change = time.time()

    def _finish_partial(self) -> None:
        before = len(self.writer.written)
        self.writer.finish_partial()
        self._append(before)

    def _next_name(self) -> Path:
        self.rotations += 1
        return self.app.with_name(f"app.log.{self.rotations}")

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
        self.last_change = time.time()

    @precondition(lambda self: self.exists)
    @rule(late=st.integers(0, 5))
    def rename_rotate(self, late: int) -> None:
        self._finish_partial()
        known = self._known_inode()
        before = len(self.writer.written)
        self.writer.rename_rotate(self._next_name(), late_lines=late)
        self.generation.extend(self.writer.written[before:])  # the late lines went to the renamed file
        self._unless_known(known)
        self.generation = []
        self.last_change = time.time()

    @precondition(lambda self: self.exists)
    @rule()
    def copytruncate(self) -> None:
        self._finish_partial()
        self._unless_known(self._known_inode() and bool(set(self.generation) & self._observed()))
        self.writer.copytruncate(self._next_name())
        self.generation = []
        self.last_change = time.time()

    @precondition(lambda self: self.exists)
    @rule()
    def truncate(self) -> None:
        self._finish_partial()
        self._unless_known(False)
        self.writer.truncate()
        self.generation = []
        self.last_change = time.time()

    @precondition(lambda self: self.exists)
    @rule()
    def delete(self) -> None:
        self._finish_partial()
        self._unless_known(self.sidecar.running and self._known_inode())
        self.writer.delete()
        self.generation = []
        self.exists = False
        self.last_change = time.time()

    # -- the sidecar --------------------------------------------------------------------------

    @precondition(lambda self: self.sidecar.running and not self.paused)
    @rule()
    def pause(self) -> None:
        """SIGSTOP: the sidecar falls behind (a CPU-throttled pod) while the next operations happen."""
        self.sidecar.pause()
        self.paused = True

    @precondition(lambda self: self.paused)
    @rule()
    def resume(self) -> None:
        self.sidecar.resume()
        self.paused = False

    @precondition(lambda self: self.sidecar.running and not self.paused)
    @rule()
    def stop(self) -> None:
        assert self.sidecar.stop() == 0, self.sidecar.stderr()

    @precondition(lambda self: not self.sidecar.running)
    @rule()
    def start(self) -> None:
        self.sidecar.start()

    @precondition(lambda self: self.sidecar.running and not self.paused)
    @rule()
    def kill_and_start(self) -> None:
        self._wait_checkpoint_after(self.last_change + 0.05)
        self.sidecar.kill()
        self.may_duplicate |= set(self.writer.written)
        self.sidecar.start()

    def _wait_checkpoint_after(self, moment: float) -> None:
        state = self.checkpoint_dir / "sidecar-state.json"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if json.loads(state.read_bytes())["written_at"] >= moment:
                    return
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"no checkpoint written after the last operation\n{self.sidecar.stderr()}")

    # -- the verdict --------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.paused:
                self.resume()
            if not self.sidecar.running:
                self.sidecar.start()
            self._finish_partial()
            must = set(self.writer.written) - self.may_lose
            self.sidecar.wait_delivered({STREAM: must}, timeout=15)
            assert self.sidecar.stop() == 0, self.sidecar.stderr()
            report = check(
                self.sidecar.output(),
                {STREAM: self.writer.written},
                may_lose={STREAM: self.may_lose},
                may_duplicate={STREAM: self.may_duplicate},
            )
            assert report.ok, f"{report.summary()}\n{self.sidecar.stderr()}"
        finally:
            self.sidecar.cleanup()
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

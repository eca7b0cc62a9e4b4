"""Every short sequence of container restarts and kubelet rotations while the sidecar is down, following
a ``/var/log/containers`` link: every line comes out once, in order.

While down, one to three of: lines from the running container (``W``), a restart that moves the link to a
new file (``SW``), the kubelet's rename rotation of the current file (``RN``, the runtime writing 5 lines to
its new file), and last lines of the container before (``OLD``). Sequences that moved the link lost the files
it named in between (an intermediate container's log, or a rotated generation of one) and the file created at
the old target's name by a rotation: start-up did not look for a link's targets, as a relink seen running does.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import SidecarFactory
from tests.test_symlink_swap import Kubelet, _assert_every_line_once_in_order
from tests.writer import LogWriter

SEQUENCES = [s for n in (1, 2, 3) for s in itertools.product(("W", "SW", "RN", "OLD"), repeat=n)]


def _apply(step: str, index: int, kubelet: Kubelet, writers: list[LogWriter]) -> None:
    current = writers[-1]
    if step == "W":
        current.write(30)
    elif step == "OLD":
        writers[-2 if len(writers) > 1 else -1].write(7)
    elif step == "SW":
        writers.append(kubelet.start_container())
    else:
        current.rename_rotate(current.path.with_name(f"{current.path.name}.2026120{index + 1}-101500"))
        current.write(5)


@pytest.mark.parametrize("sequence", SEQUENCES, ids="-".join)
def test_any_short_sequence_of_restarts_and_rotations_while_down_delivers_every_line_once_in_order(
        sequence: tuple[str, ...], tmp_path: Path, sidecar: SidecarFactory) -> None:
    kubelet = Kubelet(tmp_path)
    writers = [kubelet.start_container()]
    writers[0].write(100)
    sc = sidecar(kubelet.link)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    for index, step in enumerate(sequence):
        _apply(step, index, kubelet, writers)
    sc.start()
    writers[-1].write(20)
    _assert_every_line_once_in_order(sc, *writers)

"""Which generation came first, told by the watcher's events when the file clock cannot tell."""

from __future__ import annotations

from sidecar.core.rotation import arrival_order
from sidecar.core.watch import NameEvent


def _rotate(events: list[NameEvent], cookie: int, shifts: list[tuple[str, str]]) -> None:
    for number, (source, target) in enumerate(shifts):
        events += [NameEvent(source, "gone", cookie + number), NameEvent(target, "moved_in", cookie + number)]


def test_files_created_in_a_burst_are_ranked_by_creation_under_the_names_they_have_at_its_end() -> None:
    events = [NameEvent("app.log", "created")]
    _rotate(events, 10, [("app.log", "app.log.1")])
    events.append(NameEvent("app.log", "created"))
    _rotate(events, 20, [("app.log.1", "app.log.2"), ("app.log", "app.log.1")])
    events.append(NameEvent("app.log", "created"))
    order = arrival_order(events)
    assert sorted(order, key=order.__getitem__) == ["app.log.2", "app.log.1", "app.log"]


def test_files_deleted_or_from_before_the_events_have_no_rank() -> None:
    events = [NameEvent("app.log.1", "gone", 5), NameEvent("app.log.2", "moved_in", 5),
              NameEvent("app.log", "created"), NameEvent("app.log", "gone"), NameEvent("other.log", "moved_in", 9)]
    assert arrival_order(events) == {}

"""The lending loop: a reader thread runs its callback only while the loop sleeps, as the loop would have.

What it must never do is run beside the loop's own code; what it asks of the loop (a future resolved, a
timer set, a task made) must happen as promptly as if the loop had run the callback itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from sidecar.core.loop import LendingLoop, LentReader

T = TypeVar("T")


def _run(main: Callable[[], Coroutine[Any, Any, T]], debug: bool = False) -> T:
    with asyncio.Runner(loop_factory=LendingLoop, debug=debug) as runner:
        return runner.run(asyncio.wait_for(main(), 10))


@contextmanager
def _pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        yield read, write
    finally:
        os.close(read)
        os.close(write)


def _lent(fd: int, callback: Callable[[], None]) -> LentReader:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, LendingLoop)
    return loop.add_lent_reader(fd, callback)


@pytest.mark.parametrize("debug", [False, True], ids=["", "asyncio debug mode"])
def test_a_lent_callback_runs_on_its_own_thread_and_resolves_a_future_the_loop_awaits(debug: bool) -> None:
    """In asyncio's debug mode too, which refuses calls from other threads than the loop's: the borrower's
    are the loop's own (refused, a future would be left done with its awaiting task never woken)."""
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        with _pipe() as (read, write):

            def ready() -> None:
                os.read(read, 100)
                assert asyncio.get_running_loop() is loop
                if not done.done():
                    done.set_result(threading.get_ident())

            reader = _lent(read, ready)
            reader.arm()
            await asyncio.sleep(0.05)
            began = time.monotonic()
            os.write(write, b"x")
            ident = await done
            took = time.monotonic() - began
            reader.close()
        return ident, took

    ident, took = _run(main, debug)
    assert ident != threading.get_ident()
    assert took < 0.5


def test_a_timer_and_a_task_made_by_a_lent_callback_run_on_time_while_the_loop_slept_on_a_long_timeout() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[float] = loop.create_future()
        began = 0.0
        with _pipe() as (read, write):

            def fire() -> None:
                if not fired.done():
                    fired.set_result(time.monotonic() - began)

            async def task() -> None:
                loop.call_later(0.02, fire)

            def ready() -> None:
                os.read(read, 100)
                asyncio.get_running_loop().create_task(task())

            reader = _lent(read, ready)
            reader.arm()
            idle = asyncio.create_task(asyncio.sleep(30))  # the loop's own next wake-up is far away
            await asyncio.sleep(0.05)
            began = time.monotonic()
            os.write(write, b"x")
            took = await fired
            idle.cancel()
            reader.close()
        return took

    assert _run(main) < 0.5


def test_a_lent_callback_never_runs_while_the_loop_runs_its_own_code() -> None:
    """The loop's callbacks hold the loop (here, sleeping without awaiting) while writes keep coming."""
    overlaps: list[str] = []
    inside = threading.Event()

    async def main() -> int:
        served = 0
        with _pipe() as (read, write):

            def ready() -> None:
                nonlocal served
                os.read(read, 100)
                if inside.is_set():
                    overlaps.append("lent callback ran inside the loop's code")
                served += 1

            reader = _lent(read, ready)
            reader.arm()
            for _ in range(20):
                inside.set()
                os.write(write, b"x")
                time.sleep(0.01)  # the loop busy: the reader thread must wait for its sleep
                inside.clear()
                await asyncio.sleep(0.005)
            reader.close()
        return served

    served = _run(main)
    assert overlaps == []
    assert served >= 10


def test_a_disarmed_reader_leaves_the_descriptor_alone_until_armed() -> None:
    async def main() -> tuple[int, int]:
        calls = 0
        with _pipe() as (read, write):

            def ready() -> None:
                nonlocal calls
                calls += 1
                os.read(read, 100)

            reader = _lent(read, ready)
            os.write(write, b"x")
            await asyncio.sleep(0.1)
            before = calls
            reader.arm()
            for _ in range(100):
                if calls:
                    break
                await asyncio.sleep(0.01)
            reader.close()
        return before, calls

    before, after = _run(main)
    assert before == 0
    assert after == 1


def test_a_lent_callback_that_raises_is_reported_on_the_loop_and_the_reader_goes_on() -> None:
    reported: list[BaseException] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
        calls = 0
        with _pipe() as (read, write):

            def ready() -> None:
                nonlocal calls
                os.read(read, 100)
                calls += 1
                if calls == 1:
                    raise OSError("read failed")

            reader = _lent(read, ready)
            reader.arm()
            for _ in range(2):
                os.write(write, b"x")
                await asyncio.sleep(0.1)
            reader.close()
        return calls

    assert _run(main) == 2
    assert [str(exc) for exc in reported] == ["read failed"]


@pytest.mark.parametrize("close_first", ["reader", "loop"])
def test_the_reader_thread_ends_when_closed_or_when_its_loop_closes(close_first: str) -> None:
    threads: list[threading.Thread] = []

    async def main(read: int) -> None:
        reader = _lent(read, lambda: None)
        reader.arm()
        threads.extend(t for t in threading.enumerate() if t not in before and t.name.startswith("lent-reader"))
        if close_first == "reader":
            reader.close()
            await asyncio.sleep(0)  # the thread needs the loop's sleep to see it

    before = set(threading.enumerate())
    with _pipe() as (read, _):
        _run(lambda: main(read))
    assert len(threads) == 1
    threads[0].join(5)
    assert not threads[0].is_alive()

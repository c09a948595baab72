"""The daemon's worker thread (`Loop`) at a stop: work signalled before the
stop is done before the thread ends, and a stop with nothing signalled starts
no new step.

The daemon stops the worker while it may still be in a step (at start-up, its
first step takes its time). A message committed in that step's shadow wakes
the worker; that wake-up must not be lost to the stop, or the requester hears
nothing until the next start (the CI failure of SIGTERM's drain test).
"""

from __future__ import annotations

import threading

from maild.service.daemon import Loop


class Steps:
    """A step that records itself; its first run waits until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_first = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls == 1:
            self.in_first.set()
            assert self.release.wait(10)
        return False


def _stop_in_background(loop: Loop) -> threading.Thread:
    stopper = threading.Thread(target=loop.stop, args=(10.0,))
    stopper.start()
    assert loop._stopping.wait(5)
    return stopper


def test_work_signalled_during_a_step_is_done_before_the_thread_ends() -> None:
    steps = Steps()
    loop = Loop("worker", steps, interval=3600.0)
    loop.start()
    assert steps.in_first.wait(5)
    loop.wake.set()  # a message committed while the first step runs
    stopper = _stop_in_background(loop)  # SIGTERM before that step ends
    steps.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert steps.calls == 2  # the committed message got its step


def test_work_signalled_while_settling_is_done_before_the_thread_ends() -> None:
    steps = Steps()
    steps.release.set()
    loop = Loop("sender", steps, interval=3600.0, settle=3600.0)
    loop.start()
    assert steps.in_first.wait(5)
    loop.wake.set()  # work arrives; the loop settles for more
    stopper = _stop_in_background(loop)
    stopper.join(10)
    assert not stopper.is_alive()
    assert steps.calls == 2


def test_a_stop_with_nothing_signalled_starts_no_step() -> None:
    steps = Steps()
    steps.release.set()
    loop = Loop("worker", steps, interval=3600.0)
    loop.start()
    assert steps.in_first.wait(5)
    assert loop.stop(10)
    assert steps.calls == 1

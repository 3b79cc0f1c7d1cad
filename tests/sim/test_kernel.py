"""hasim's event loop (hasim.sim.kernel) against stock SimPy.

What is proved: on programs that mix every construct the model uses (timeouts and
``env.sleep``, events triggered by other processes, ``a | b`` conditions, process
results, interrupts, urgent events, zero delays, waits that cross many windows of the
ladder queue, runs resumed with a later ``until``), hasim's Environment processes the
same events in the same order as ``simpy.Environment`` and counts them alike. The
expected trace is stock SimPy's own, never an earlier hasim run's.
"""

from __future__ import annotations

import gc
import random
import weakref
from collections.abc import Callable, Generator
from typing import Any

import pytest
import simpy

from hasim.sim.kernel import (
    PER_SECOND,
    WINDOW,
    WINDOW_EVENTS,
    Environment,
    events_processed,
    quiet_gc,
)

Trace = list[tuple[Any, ...]]


def program(env: simpy.Environment, trace: Trace, seed: int, sleep: bool) -> None:
    """Random processes waking each other; ``sleep``: plain waits use env.sleep."""
    rnd = random.Random(seed)

    def wait(d: float) -> Any:
        return env.sleep(d) if sleep else env.timeout(d)  # type: ignore[attr-defined]

    signals = [env.event() for _ in range(4)]

    def worker(k: int) -> Generator[Any, Any, int]:
        n = 0
        for _ in range(rnd.randint(5, 40)):
            r = rnd.random()
            try:
                if r < 0.5:
                    # Waits from zero to many ladder windows; some land on equal times.
                    yield wait(rnd.choice([0.0, WINDOW, 1.0, rnd.uniform(0, 30)]))
                elif r < 0.7:
                    i = rnd.randrange(len(signals))
                    got = yield signals[i] | env.timeout(rnd.uniform(0, 5))
                    trace.append(("cond", k, env.now, sorted(str(v) for v in got.values())))
                elif r < 0.85:
                    i = rnd.randrange(len(signals))
                    if not signals[i].triggered:
                        signals[i].succeed(k)
                    signals[i] = env.event()
                    yield wait(rnd.uniform(0, 2))
                else:
                    child = env.process(helper(k))
                    value = yield child
                    trace.append(("child", k, env.now, value))
            except simpy.Interrupt as i:
                trace.append(("interrupted", k, env.now, i.cause))
            n += 1
            trace.append(("step", k, env.now))
        return n

    def helper(k: int) -> Generator[Any, Any, str]:
        yield wait(rnd.uniform(0, 3))
        return f"h{k}"

    procs = [env.process(worker(k)) for k in range(12)]

    def interrupter() -> Generator[Any, Any, None]:
        for _ in range(15):
            yield wait(rnd.uniform(0, 4))
            p = rnd.choice(procs)
            if p.is_alive:
                p.interrupt(f"at {env.now:.3f}")
                trace.append(("interrupt", env.now))

    env.process(interrupter())
    for p in procs:
        p.callbacks.append(lambda ev, t=trace: t.append(("done", ev.value)))


def run(make: Callable[[], simpy.Environment], seed: int, sleep: bool) -> tuple[Trace, int]:
    env = make()
    trace: Trace = []
    program(env, trace, seed, sleep)
    env.run(until=40)
    trace.append(("mid", env.now, events_processed(env)))
    env.run(until=400)  # resumed: the stop event of the first run goes on as SimPy's does
    return trace, events_processed(env)


@pytest.mark.parametrize("seed", range(8))
def test_same_events_same_order_as_simpy(seed: int) -> None:
    expected = run(simpy.Environment, seed, sleep=False)
    assert len(expected[0]) > 50
    assert run(Environment, seed, sleep=False) == expected
    # env.sleep in place of every plain env.timeout: the same trace and the same count.
    assert run(Environment, seed, sleep=True) == expected


def crowded(env: simpy.Environment, trace: Trace, seed: int, sleep: bool) -> None:
    """Thousands of processes on short waits, many of them on equal times (multiples of
    1/8 s), interrupted now and then: far more events per window than WINDOW_EVENTS."""
    rnd = random.Random(seed)

    def wait(d: float) -> Any:
        return env.sleep(d) if sleep else env.timeout(d)  # type: ignore[attr-defined]

    def worker(k: int) -> Generator[Any, Any, None]:
        for _ in range(20):
            d = rnd.choice([0.0, round(rnd.uniform(0, 2) * 8) / 8, rnd.uniform(0, 2)])
            try:
                yield wait(d)
            except simpy.Interrupt:
                trace.append(("interrupted", k, env.now))
            trace.append((k, env.now))

    procs = [env.process(worker(k)) for k in range(5000)]

    def interrupter() -> Generator[Any, Any, None]:
        while True:
            yield wait(rnd.uniform(0, 0.5))
            p = rnd.choice(procs)
            if p.is_alive:
                p.interrupt()

    env.process(interrupter())


def test_finer_windows_for_a_crowded_queue_keep_simpys_order() -> None:
    def go(make: Callable[[], simpy.Environment], sleep: bool) -> tuple[Trace, int, Any]:
        env = make()
        trace: Trace = []
        crowded(env, trace, 3, sleep)
        env.run(until=3)
        trace.append(("mid", env.now, events_processed(env)))
        env.run(until=60)
        return trace, events_processed(env), env

    *expected, _ = go(simpy.Environment, sleep=False)
    # 5,000 processes over some 20 s: several thousand events per quarter second.
    assert expected[1] / 20 * WINDOW > 4 * WINDOW_EVENTS
    for sleep in (False, True):
        *got, env = go(Environment, sleep)
        assert env._per_second > PER_SECOND  # the windows were made finer
        assert got == expected


def test_sleep_rejects_a_negative_delay_like_timeout() -> None:
    env = Environment()
    with pytest.raises(ValueError):
        env.sleep(-1.0)
    with pytest.raises(ValueError):
        env.timeout(-1.0)


def test_a_failed_event_nobody_defused_crashes_the_run() -> None:
    env = Environment()

    def boom() -> Generator[Any, Any, None]:
        yield env.sleep(1.0)
        raise KeyError("x")

    env.process(boom())
    with pytest.raises(KeyError):
        env.run(until=5)


def test_garbage_collector_settings_come_back() -> None:
    """No automatic collection while the loop runs; alone, ``run`` leaves the collector
    as it found it and freezes nothing."""
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    env = Environment()
    seen: list[bool] = []

    def probe() -> Generator[Any, Any, None]:
        yield env.sleep(1.0)
        seen.append(gc.isenabled())

    env.process(probe())
    env.run(until=2)
    assert seen == [False]
    assert gc.isenabled()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


class _Node:
    """A tracked object that can sit in a cycle and be watched through a weak reference."""

    def __init__(self) -> None:
        self.me = self


def test_quiet_gc_frees_the_cycles_made_inside_and_walks_nothing_older() -> None:
    """No automatic collection inside ``quiet_gc`` (the event loop's included); at the
    outermost end one collection frees the cycles made inside, and leaves out what was
    alive before: an older cycle is still there for a later collection. A nested use
    does not collect."""
    gc.collect()  # counts at zero: no automatic collection before quiet_gc starts
    older = _Node()
    older_ref = weakref.ref(older)
    del older  # cyclic garbage of the caller, made before
    env = Environment()
    made: list[weakref.ref[_Node]] = []
    seen: list[bool] = []

    def maker() -> Generator[Any, Any, None]:
        for _ in range(1000):
            made.append(weakref.ref(_Node()))  # each one cyclic garbage at once
            seen.append(gc.isenabled())
            yield env.sleep(1.0)

    env.process(maker())
    with quiet_gc():
        assert not gc.isenabled()
        with quiet_gc():
            env.run(until=500)
        assert all(r() is not None for r in made)  # the inner end collected nothing
        env.run(until=2000)
    assert seen == [False] * 1000
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert all(r() is None for r in made)
    assert older_ref() is not None
    gc.collect()
    assert older_ref() is None


@pytest.mark.parametrize("until", ["exhaust", "event"])
def test_run_without_a_number_steps_the_same(until: str) -> None:
    """``run()`` to the end of the schedule and ``run(until=event)`` take SimPy's own loop
    over this kernel's ``step``: the same trace and count as stock SimPy."""

    def go(make: Callable[[], simpy.Environment], sleep: bool) -> tuple[Trace, int, Any]:
        env = make()
        trace: Trace = []
        program(env, trace, 3, sleep)
        if until == "exhaust":
            value = env.run()
        else:
            stop = env.event()

            def trigger() -> Generator[Any, Any, None]:
                yield env.timeout(17.25)
                stop.succeed("stopped")

            env.process(trigger())
            value = env.run(until=stop)
        return trace, events_processed(env), value

    expected = go(simpy.Environment, sleep=False)
    assert go(Environment, sleep=False) == expected
    assert go(Environment, sleep=True) == expected

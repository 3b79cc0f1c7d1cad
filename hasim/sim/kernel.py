"""SimPy's event loop, leaner: the same events in the same order, less Python per event.

:class:`Environment` is a :class:`simpy.Environment` that processes exactly the events
SimPy 4 would (``simpy/core.py``, ``simpy/events.py``), in the same order: by ``(time,
priority, id)``, the ids handed out in the same order; a failed event nobody defused
crashes the run; ``run(until=t)`` stops at the same urgent event at ``t``. What changes is
the cost per event (docs/performance.md has the profiles and figures):

- The queue is a two-tier "ladder". SimPy keeps every pending event in one heap of
  ``(time, priority, id, event)`` tuples; a 10,000-node run keeps some 100,000 events
  pending, and a pop and push then cost about 4 us, mostly cache misses on the way down
  a 17-level heap (0.8 us at 8,000 events). Here only the events of the current time
  window (``WINDOW`` seconds of simulated time) are in the heap; later ones wait in a
  list per window, appended in O(1), and a window's list is heapified when the clock
  reaches it. Windows are numbered ``int(time / WINDOW)``, monotonic in time, so the
  heap always holds the earliest pending events and the order is SimPy's exactly.
  (A float-keyed heap of distinct times with a dict of per-time deques was tried too and
  dropped: the dict and deque cost more than the tuple comparisons they save.)
- The cyclic garbage collector. A run allocates several objects per event (the event,
  its callback list, the heap entry, the records) and keeps millions of them alive, so
  with CPython's default thresholds (a young collection every 700 net allocations, a
  full one every 100 young ones) collections took a quarter of a 1,000-node run. While
  ``run`` loops there is no automatic collection at all (:func:`paused_gc`): the model's
  events and processes leave no cycles behind (a finished :class:`Process` drops its
  kept ``_resume``; ``tests/sim/test_no_cycles.py`` runs every scenario of
  ``scenarios/`` with the collector off and finds no cyclic garbage), so a collection
  there could only traverse the records the run keeps, and did: at 10,000 nodes each
  young collection walked 800,000 of them, cold, in 0.57 s. The model as a whole is one
  big cycle, though (a component holds its process, whose generator holds the
  component): when a run ends it is garbage only a collection frees. So
  :func:`quiet_gc`, around a whole ``simulate()``, freezes what was alive before, runs
  with no automatic collection at all, and ends with one collection, which walks only
  what the run made (the frozen objects are left out of it) and frees the model there
  and then.
- A plain wait (:meth:`Environment.sleep`) puts the process itself in the queue, under
  the priority :data:`SLEEP` (SimPy's NORMAL as a float, which sorts the same): no event
  object, and :class:`Process` keeps its attributes in slots. At 10,000 nodes the model's
  live objects are larger than the caches and each object an event reaches costs a
  cache miss, so fewer and smaller objects per event is what keeps the cost per event
  near that of a small cluster.
- ``run`` inlines :meth:`step` (one call and one ``try`` less per event); ``timeout``
  schedules its event without the calls of ``Timeout.__init__`` and ``schedule``; a
  :class:`Process` keeps one bound ``_resume`` instead of making a new one per wait.

Counting is untouched: every event still takes one id from ``_eid`` when it is
scheduled, so :func:`events_processed` counts the events processed here exactly as it
does for a stock :class:`simpy.Environment` (ids handed out, less events still pending).
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from heapq import heapify, heappop, heappush
from typing import Any

import simpy
from simpy.core import EmptySchedule, Infinity, StopSimulation
from simpy.events import NORMAL, PENDING, URGENT, Event, Initialize, Timeout, _describe_frame

#: Simulated seconds per window of the ladder queue, to begin with. A 1,000-node cluster
#: processes about 1,300 events per simulated second: a quarter second keeps its heap at
#: a few hundred events.
WINDOW = 0.25
#: Windows per simulated second, to begin with. Always a power of two: ``time * ps`` and
#: ``k / ps`` are exact, so a window's number and its end agree to the last bit (an event
#: at time t < end goes to the heap exactly when int(t * ps) <= k).
PER_SECOND = 4.0
#: The events a window should hold. When the next window holds more than four times as
#: many (a 10,000-node cluster holds ten times those of a 1,000-node one), the windows are
#: made finer: a heap of 3,000 entries and their times spans more than a core's L2
#: cache, and the 10,000-node run's event loop was 10 % slower for it.
WINDOW_EVENTS = 256
#: The finest windows (a millisecond): a burst of events at one instant cannot be split.
MAX_PER_SECOND = 1024.0


def events_processed(env: simpy.Environment) -> int:
    """Events processed so far: ids handed out (one per event scheduled) less the events
    still pending. The same count for a stock SimPy environment and for
    :class:`Environment`, so that a benchmark compares like with like."""
    # itertools.count has no peek: take the next id and put a fresh counter at the same
    # place, so that counting changes nothing.
    nxt = next(env._eid)
    env._eid = itertools.count(nxt)
    if isinstance(env, Environment):
        return nxt - env.pending()
    return nxt - len(env._queue)


#: What a process of the model yields: an event, or a plain delay (Environment.sleep).
Wait = Event | float

#: Whether a :func:`quiet_gc` is open (the outermost one collects at its end).
_quiet = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """No automatic cyclic collection for the duration (an event loop: see the module
    docstring); the collector then comes back as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def quiet_gc() -> Iterator[None]:
    """No automatic cyclic collection for the duration (:func:`paused_gc`), then one
    collection of what was made meanwhile: around a run (``simulate``), whose model is
    one big cycle when it ends. What is alive at the start is frozen (:func:`gc.freeze`)
    so that the final collection walks only the run's objects, not the caller's; then
    everything is unfrozen and the collector comes back as it was. A nested use adds
    nothing: the outermost one collects.

    (Before this, the model was left to CPython's own heuristics after the run: the
    objects that :func:`gc.unfreeze` puts back into the oldest generation do not count
    towards its next full collection, and the next run froze them again, so a batch
    worker kept every run's model, about 50,000 objects and 8 MiB per 150-node run, until
    it exited.)"""
    global _quiet
    if _quiet:
        yield
        return
    with paused_gc():
        gc.freeze()
        _quiet = True
        try:
            yield
        finally:
            _quiet = False
            try:
                gc.collect()
            finally:
                gc.unfreeze()


class FastTimeout(Timeout):
    """:class:`simpy.Timeout`, scheduled inline (same check, same id, same place)."""

    def __init__(self, env: Environment, delay: float, value: Any = None) -> None:
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        self.env = env
        self.callbacks = []
        self._value = value
        self._delay = delay
        self._ok = True
        t = env._now + delay
        if t < env._horizon:
            heappush(env._queue, (t, NORMAL, next(env._eid), self))
        else:
            k = int(t * env._per_second)
            later = env._later.get(k)
            if later is None:
                env._later[k] = [(t, NORMAL, next(env._eid), self)]
                heappush(env._windows, k)
            else:
                later.append((t, NORMAL, next(env._eid), self))


#: The priority of a process's plain wait (:meth:`Environment.sleep`) in the queue:
#: SimPy's NORMAL as a float. It sorts exactly as NORMAL would (1.0 == 1, then the id
#: decides), so the entry ``(time, SLEEP, id, process)`` stands where SimPy would put a
#: :class:`~simpy.events.Timeout`; the loop tells it by identity from an event's entry
#: and resumes the process itself. No object per wait, and none per process either: at
#: 10,000 nodes every object an event touches is a likely cache miss.
SLEEP = float(NORMAL)


class Wake:
    """What a process's plain wait resumes it with: ``None``, as a Timeout without a
    value would. One shared instance, :data:`WOKEN`; also the process's ``target``
    while it sleeps."""

    __slots__ = ()
    _ok = True
    _value = None
    callbacks = None


WOKEN = Wake()


class Process(simpy.Process):
    """:class:`simpy.Process` that also waits on plain delays (:meth:`Environment.sleep`)
    and keeps one bound ``_resume`` for all its waits.

    Its attributes are slots: SimPy's are in the instance dict, a second allocation
    away from the object, one more cache miss per event in a big run. ``_sleep`` is the
    id of the queue entry of its pending plain wait; an entry whose id is not it (the
    wait was voided by an interrupt) resumes nothing.

    SimPy appends ``self._resume`` to the callbacks of every event the process waits
    for, which builds a new bound method each time; an interrupt removes it again with
    ``list.remove``, which compares bound methods by equality, so a kept one behaves the
    same. A yielded number is scheduled at once, as ``Timeout(env, delay)`` schedules
    itself when made: in ``yield env.sleep(d)`` nothing happens between the two, so the
    id and the order are those of ``yield env.timeout(d)``.
    """

    __slots__ = ("env", "callbacks", "_value", "_ok", "_defused", "_generator", "_resume_cb",
                 "_target", "_sleep")

    def __init__(self, env: Environment, generator: Any) -> None:
        if not hasattr(generator, "throw"):
            raise ValueError(f"{generator} is not a generator.")
        self.env = env
        self.callbacks = []
        self._value = PENDING  # a class attribute of simpy.Event, shadowed by the slot
        self._generator = generator
        self._resume_cb = self._resume
        self._sleep: int | None = None
        self._target = Initialize(env, self)

    def interrupt(self, cause: Any = None) -> None:
        """:meth:`simpy.Process.interrupt`, also while the process sleeps: its pending
        wake is voided (it stays queued and is processed as a no-op, as an abandoned
        Timeout is) and SimPy's Interruption takes over."""
        if self._target is WOKEN and self._value is PENDING \
                and self is not self.env.active_process:
            self._sleep = None
            holder = Event(self.env)
            holder.callbacks = [self._resume_cb]
            self._target = holder
        super().interrupt(cause)

    def _resume(self, event: Any) -> None:
        env: Any = self.env
        env._active_proc = self
        gen = self._generator
        while True:
            try:
                if event._ok:
                    event = gen.send(event._value)
                else:
                    event._defused = True
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    event = gen.throw(exc)
            except StopIteration as e:
                event = None
                # No cycle left behind for the garbage collector.
                self._resume_cb = None  # type: ignore[assignment]
                self._ok = True
                self._value = e.args[0] if len(e.args) else None
                env.schedule(self)
                break
            except BaseException as e:
                event = None
                self._resume_cb = None  # type: ignore[assignment]
                self._ok = False
                e.__traceback__ = e.__traceback__.tb_next  # type: ignore[union-attr]
                self._value = e
                env.schedule(self)
                break
            cls = event.__class__
            if cls is float or cls is int:  # env.sleep(delay): schedule as a Timeout would
                t = env._now + event
                self._sleep = eid = next(env._eid)
                if t < env._horizon:
                    heappush(env._queue, (t, SLEEP, eid, self))
                else:
                    k = int(t * env._per_second)
                    later = env._later.get(k)
                    if later is None:
                        env._later[k] = [(t, SLEEP, eid, self)]
                        heappush(env._windows, k)
                    else:
                        later.append((t, SLEEP, eid, self))
                event = WOKEN
                break
            try:
                callbacks = event.callbacks
            except AttributeError:
                descr = _describe_frame(gen.gi_frame)  # type: ignore[attr-defined]
                raise RuntimeError(f'\n{descr}Invalid yield value "{event}"') from None
            if callbacks is not None:
                callbacks.append(self._resume_cb)
                break
        self._target = event
        env._active_proc = None


class Environment(simpy.Environment):
    """A :class:`simpy.Environment` with a ladder queue and a leaner run loop (see the
    module docstring). ``_queue`` (SimPy's heap) holds the events of windows up to
    ``_window``; ``_later`` the lists of later windows, whose numbers are in the heap
    ``_windows``."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        #: Windows per simulated second (made finer by :meth:`_refine`).
        self._per_second = PER_SECOND
        self._window = int(initial_time * self._per_second)
        #: Where the current window ends: an event before it goes into the heap.
        self._horizon = (self._window + 1) / self._per_second
        self._later: dict[int, list[Any]] = {}
        self._windows: list[int] = []

    def pending(self) -> int:
        """Events scheduled and not yet processed."""
        return len(self._queue) + sum(len(v) for v in self._later.values())

    def event(self) -> Event:
        return Event(self)

    def timeout(self, delay: float = 0, value: Any = None) -> Timeout:
        return FastTimeout(self, delay, value)

    def sleep(self, delay: float) -> Wait:
        """A process's plain wait: ``yield env.sleep(d)`` resumes it ``d`` later with
        ``None``, exactly as ``yield env.timeout(d)`` would (same id, same order), but
        without a Timeout object. Only for a wait the process yields at once, never in a
        condition (``a | b``) or a callback: use :meth:`timeout` there."""
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        return delay

    def process(self, generator: Any) -> simpy.Process:
        return Process(self, generator)

    def schedule(self, event: Event, priority: Any = NORMAL, delay: float = 0) -> None:
        t = self._now + delay
        if t < self._horizon:
            heappush(self._queue, (t, priority, next(self._eid), event))
        else:
            k = int(t * self._per_second)
            later = self._later.get(k)
            if later is None:
                self._later[k] = [(t, priority, next(self._eid), event)]
                heappush(self._windows, k)
            else:
                later.append((t, priority, next(self._eid), event))

    def _advance(self) -> bool:
        """The heap is empty: move the next window with events into it (after making the
        windows finer if it holds too many, :meth:`_refine`)."""
        if not self._windows:
            return False
        k = heappop(self._windows)
        batch = self._later.pop(k)
        if len(batch) > 4 * WINDOW_EVENTS and self._per_second < MAX_PER_SECOND:
            self._refine(batch)
            k = heappop(self._windows)
            batch = self._later.pop(k)
        queue = self._queue
        queue.extend(batch)
        heapify(queue)
        self._window = k
        self._horizon = (k + 1) / self._per_second
        return True

    def _refine(self, batch: list[Any]) -> None:
        """Finer windows, so that one holds about :data:`WINDOW_EVENTS` events like
        ``batch`` (the next window's): windows per second times a power of two, and
        every pending event put in the window of its new number. The heap is empty
        (this runs only from :meth:`_advance`), so every pending event is in ``batch``
        or ``_later``; numbers stay monotonic in time, so the order is unchanged."""
        factor = 2.0
        while len(batch) > factor * WINDOW_EVENTS and self._per_second * factor < MAX_PER_SECOND:
            factor *= 2.0
        ps = self._per_second = self._per_second * factor
        later: dict[int, list[Any]] = {}
        for entries in (batch, *self._later.values()):
            for entry in entries:
                k = int(entry[0] * ps)
                window = later.get(k)
                if window is None:
                    later[k] = [entry]
                else:
                    window.append(entry)
        self._later = later
        self._windows = list(later)
        heapify(self._windows)

    def peek(self) -> float:
        if self._queue:
            return self._queue[0][0]
        if self._windows:
            return min(self._later[self._windows[0]])[0]
        return Infinity

    def step(self) -> None:
        """:meth:`simpy.Environment.step` on the ladder queue."""
        if not self._queue and not self._advance():
            raise EmptySchedule()
        event: Any
        self._now, priority, eid, event = heappop(self._queue)
        if priority is SLEEP:
            if event._sleep is eid:
                event._resume(WOKEN)
            return
        callbacks, event.callbacks = event.callbacks, None
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[callbacks.index(callback) + 1:]
            self.schedule(event, -1)
            raise
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc

    def run(self, until: Any = None) -> Any:
        """:meth:`simpy.Environment.run`; a number as ``until`` takes the inlined loop."""
        if until is None or isinstance(until, Event):
            return super().run(until)
        at = until if isinstance(until, int) else float(until)
        if at <= self._now:
            raise ValueError(f"until ({at}) must be greater than the current simulation time")
        # The same urgent stop event SimPy schedules, with the same id.
        stop = Event(self)
        stop._ok = True
        stop._value = None
        self.schedule(stop, URGENT, at - self._now)
        with paused_gc():
            return self._loop(stop)

    def _loop(self, stop: Event) -> None:
        queue: list[Any] = self._queue
        advance = self._advance
        event: Any
        while True:
            if not queue:
                advance()  # never without events: the stop event is pending
            now, priority, eid, event = heappop(queue)
            self._now = now
            if priority is SLEEP:  # a sleeping process (no callbacks list to swap)
                if event._sleep is eid:  # not voided by an interrupt
                    event._resume(WOKEN)
                continue
            if event is stop:
                # As SimPy's StopSimulation path: the stop event goes back into the queue
                # (priority -1, a new id) with its remaining callbacks, none.
                stop.callbacks = []
                self.schedule(stop, -1)
                return None
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc


__all__ = ["Environment", "EmptySchedule", "FastTimeout",
           "PENDING", "Process", "SLEEP", "StopSimulation", "WINDOW", "WOKEN", "Wait", "Wake",
           "events_processed", "paused_gc", "quiet_gc"]

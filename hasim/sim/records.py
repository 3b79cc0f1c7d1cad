"""Plain records written during a run; DataFrames are made from them once, at the end.

The hot path only appends tuples to lists and bumps counters (no DataFrame work, no
per-record objects), as Ciw does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultRecord:
    """One fault as it happened: what it hit and when it started and ended."""

    fault_id: int
    kind: str
    target: str
    at: float
    end: float | None
    hosts: frozenset[str]
    procs: frozenset[tuple[str, str]]
    #: For a partition: the host pairs whose traffic it drops.
    pairs: frozenset[frozenset[str]] = frozenset()


class Tally:
    """One count of :attr:`Recorder.checks` that a hot loop bumps as an attribute
    (``tally.n += 1``), made by :meth:`Recorder.tally`.

    An HAProxy checker counts every check it sends; ``checks[key] += 1`` hashed a
    (source, target, kind) tuple of two strings of its own on each one: the tuple, both
    strings, a slot of a 30,000-key dict and the count object, five objects to reach per
    check, each out of the caches in a 10,000-node run."""

    __slots__ = ("key", "n")

    def __init__(self, key: tuple[str, str, str]) -> None:
        self.key = key
        self.n = 0


REQUEST_COLUMNS = ("client", "host", "start", "end", "outcome", "backend", "kind")
STATE_COLUMNS = ("time", "component", "host", "subject", "from", "to", "cause")


@dataclass
class Recorder:
    """Everything a run observes, as plain tuples and counters."""

    requests: list[tuple[str, str, float, float, str, str, str]] = field(default_factory=list)
    states: list[tuple[float, str, str, str, str, str, str]] = field(default_factory=list)
    #: (source, target, kind) -> count; kinds: active, passive, connection. Hot loops
    #: count apart, in ``tallies``: :meth:`check_counts` is the whole.
    checks: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    faults: list[FaultRecord] = field(default_factory=list)
    #: Counts kept apart from ``checks`` (:meth:`tally`); :meth:`check_counts` adds them.
    tallies: list[Tally] = field(default_factory=list)

    def request(
        self, client: str, host: str, start: float, end: float, outcome: str, backend: str,
        kind: str
    ) -> None:
        self.requests.append((client, host, start, end, outcome, backend, kind))

    def tally(self, key: tuple[str, str, str]) -> Tally:
        """A new count of ``key`` for a hot loop to bump; it counts in
        :meth:`check_counts` (several tallies of one key add up)."""
        t = Tally(key)
        self.tallies.append(t)
        return t

    def check_counts(self) -> Counter[tuple[str, str, str]]:
        """(source, target, kind) -> count: ``checks`` and the tallies, a key only once
        it has counted something (as a Counter bumped in place would have it)."""
        counts = Counter(self.checks)
        for t in self.tallies:
            if t.n:
                counts[t.key] += t.n
        return counts

    def state(
        self, time: float, component: str, host: str, subject: str, old: str, new: str, cause: str
    ) -> None:
        self.states.append((time, component, host, subject, old, new, cause))

    def clear(self) -> None:
        """Drop every record, once the tables are built. The model holds this recorder and
        ends as one big cycle, so the records would otherwise go in the collection that
        frees it (:func:`hasim.sim.kernel.quiet_gc`), which reaches every string and
        float of every tuple through a cold pointer: at 10,000 nodes, 1.8 million
        request tuples took 2 s of that collection's 4 s, and 0.2 s here, freed in the
        order they were made."""
        self.requests.clear()
        self.states.clear()
        self.checks.clear()
        self.faults.clear()
        self.tallies.clear()

"""Plain records written during a run; DataFrames are made from them once, at the end.

The hot path only appends to lists and bumps counters (no DataFrame work, no
per-record objects), as Ciw does; the requests, by far the most records, are folded
into columns as they come (:class:`RequestLog`).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
TIME_COLUMNS = ("start", "end")
TEXT_COLUMNS = tuple(c for c in REQUEST_COLUMNS if c not in TIME_COLUMNS)
_TIME_AT = [REQUEST_COLUMNS.index(c) for c in TIME_COLUMNS]
_TEXT_AT = [REQUEST_COLUMNS.index(c) for c in TEXT_COLUMNS]
#: One request record: (client, host, start, end, outcome, backend, kind).
Request = tuple[str, str, float, float, str, str, str]
#: Fields of a request record.
WIDTH = len(REQUEST_COLUMNS)
#: Items of :attr:`RequestLog.rows` (records times fields) at which the hot path folds
#: them into a chunk of columns: 256 records, which a 10,000-node run makes in some
#: 1,100 events, so that they are still in a core's caches when folded (1,024 records
#: per fold cost 0.71 s of such a run, 256 cost 0.62 s, 64 cost 0.52 s but made the
#: table from 28,000 chunks slower by more).
FOLD = 256 * WIDTH


class RequestLog:
    """A run's request records (:data:`REQUEST_COLUMNS`), kept as columns.

    The hot path adds each request's fields to :attr:`rows`, a flat list (``rows +=
    (client, host, ...)``, one C call), and calls :meth:`fold` once ``rows`` holds
    :data:`FOLD` items: the latest records become one chunk of columns while they are
    still in the caches (a strided slice per text column, an ``array('d')`` per time
    column), and their times' float objects are freed. Kept as tuples to the end, a
    10,000-node run's 1.8 million requests held 1.8 million tuples and 3.6 million
    floats (some 300 MiB); the requests table was made from them in one cold pass over
    the tuples after another, and freeing them took 0.5 s more (docs/performance.md,
    sixth round). As chunks of columns a request takes 56 bytes, its texts references
    to the strings the clients already hold. (Folding tuples instead, with
    ``zip(*rows)``, cost 1.1 us a request against some 0.35 us for the strided slices
    of a flat list, in a 10,000-node run.)

    Iterating gives the records as tuples, in the order recorded."""

    __slots__ = ("rows", "chunks", "folded")

    def __init__(self, rows: Iterable[Request] = ()) -> None:
        #: The latest records' fields, :data:`WIDTH` items a record, not yet folded.
        self.rows: list[Any] = []
        #: Folded records: per chunk, a tuple of its columns in :data:`REQUEST_COLUMNS`
        #: order (the texts as lists, the times as ``array('d')``).
        self.chunks: list[tuple[Any, ...]] = []
        #: Records in :attr:`chunks`.
        self.folded = 0
        self.extend(rows)

    def append(self, row: Request) -> None:
        """One record (the hot path adds to :attr:`rows` itself, then checks its length
        against :data:`FOLD`)."""
        if len(row) != WIDTH:
            raise ValueError(f"a request record has {WIDTH} fields, not {len(row)}: {row!r}")
        self.rows += row
        if len(self.rows) >= FOLD:
            self.fold()

    def extend(self, rows: Iterable[Request]) -> None:
        for row in rows:
            self.append(row)
        self.fold()

    def fold(self) -> None:
        """Move the records in :attr:`rows` into a new chunk of columns."""
        rows = self.rows
        if not rows:
            return
        self.chunks.append(tuple(array("d", rows[i::WIDTH]) if i in _TIME_AT else rows[i::WIDTH]
                                 for i in range(WIDTH)))
        self.folded += len(rows) // WIDTH
        rows.clear()

    def __len__(self) -> int:
        return self.folded + len(self.rows) // WIDTH

    def __iter__(self) -> Iterator[Request]:
        self.fold()
        for chunk in self.chunks:
            yield from zip(*chunk, strict=True)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The text columns (:data:`TEXT_COLUMNS`) as the rows of one ``object`` array,
        and the times (:data:`TIME_COLUMNS`) as those of one ``float64`` array: the
        blocks a DataFrame keeps them in, filled once from the chunks."""
        self.fold()
        texts = np.empty((len(TEXT_COLUMNS), self.folded), dtype=object)
        times = np.empty((len(TIME_COLUMNS), self.folded), dtype=np.float64)
        at = 0
        for chunk in self.chunks:
            end = at + len(chunk[0])
            for row, i in enumerate(_TEXT_AT):
                texts[row, at:end] = chunk[i]
            for row, i in enumerate(_TIME_AT):
                times[row, at:end] = np.frombuffer(chunk[i], dtype=np.float64)
            at = end
        return texts, times

    def clear(self) -> None:
        self.rows.clear()
        self.chunks.clear()
        self.folded = 0


@dataclass
class Recorder:
    """Everything a run observes, as plain tuples, counters and the requests' columns."""

    requests: RequestLog = field(default_factory=RequestLog)
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

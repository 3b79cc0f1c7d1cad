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


REQUEST_COLUMNS = ("client", "host", "start", "end", "outcome", "backend", "kind")
STATE_COLUMNS = ("time", "component", "host", "subject", "from", "to", "cause")


@dataclass
class Recorder:
    """Everything a run observes, as plain tuples and counters."""

    requests: list[tuple[str, str, float, float, str, str, str]] = field(default_factory=list)
    states: list[tuple[float, str, str, str, str, str, str]] = field(default_factory=list)
    #: (source, target, kind) -> count; kinds: active, passive, connection.
    checks: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    faults: list[FaultRecord] = field(default_factory=list)

    def request(
        self, client: str, host: str, start: float, end: float, outcome: str, backend: str,
        kind: str
    ) -> None:
        self.requests.append((client, host, start, end, outcome, backend, kind))

    def state(
        self, time: float, component: str, host: str, subject: str, old: str, new: str, cause: str
    ) -> None:
        self.states.append((time, component, host, subject, old, new, cause))

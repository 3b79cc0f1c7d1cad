"""Whether a lab trial's timings can be trusted: the machine's load and CPU steal while
it ran (issue 21). A trial taken under contention is flagged, not silently compared: a
disagreement the host caused is not the model's.

``/proc/stat``'s first line is the time all CPUs spent per state since boot, in clock
ticks: ``user nice system idle iowait irq softirq steal ...``. Over a trial, the steal
share is Δsteal / Δtotal (a hypervisor running someone else on our CPUs), and the busy
share is 1 - Δ(idle + iowait) / Δtotal. The 1-minute load average is read at the end.
A trial is *contended* when the steal share exceeds :data:`MAX_STEAL` or the load average
exceeds :data:`MAX_LOAD_PER_CPU` per CPU.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T", bound=Hashable)

MAX_STEAL = 0.05
MAX_LOAD_PER_CPU = 1.5
#: What a real trial records of the machine, beside its own metrics (not compared).
METRICS = ("load1", "steal_share", "busy_share", "contended")


def kept_trials(trials: Collection[T], contended: Collection[T]) -> tuple[set[T], bool]:
    """The real trials a verdict uses: those not taken under contention, or every one when
    all were (a verdict on a loaded machine rather than none); and whether all were. The
    one rule of ``judge.judge`` (one cell's trials) and ``compare.side_by_side`` (each
    scenario's)."""
    mine, bad = set(trials), set(contended)
    every = bool(mine) and mine <= bad
    return (mine if every else mine - bad), every


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            first = f.readline().split()
    except OSError:
        return None
    return [int(x) for x in first[1:9]] if first and first[0] == "cpu" else None


@dataclass(frozen=True)
class Contention:
    """What the machine did during one trial."""

    load1: float
    steal_share: float
    busy_share: float

    @property
    def contended(self) -> bool:
        cpus = os.cpu_count() or 1
        return self.steal_share > MAX_STEAL or self.load1 > MAX_LOAD_PER_CPU * cpus

    def metrics(self) -> dict[str, float]:
        """The trial's :data:`METRICS`, as the lab's tables store them."""
        return {"load1": self.load1, "steal_share": self.steal_share,
                "busy_share": self.busy_share, "contended": float(self.contended)}


class Watch:
    """``with Watch() as w: ...`` then ``w.result``: the contention over the block."""

    def __enter__(self) -> Watch:
        self._start = _cpu_times()
        self.result = Contention(0.0, 0.0, 0.0)
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_times()
        load1 = os.getloadavg()[0]
        if self._start is None or end is None:
            self.result = Contention(load1, 0.0, 0.0)
            return
        d = [b - a for a, b in zip(self._start, end, strict=True)]
        total = sum(d) or 1
        idle = d[3] + d[4]
        self.result = Contention(load1, d[7] / total, 1 - idle / total)

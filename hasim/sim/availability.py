"""Long-run availability: the time each client has a working path, with confidence intervals.

"Structural" availability asks, at every instant, whether a client has a path of live
components to an apiserver that can serve (its etcd has a leader with quorum), with
perfect failover: detection delays are ignored. It is what docs/model.md's closed-form formulas
give,
and it needs only the fault timeline, so runs of simulated years take seconds
(``fidelity: structural``). The request-based ``availability`` table of a full run adds
the detection and reconnection delays on top.

Confidence intervals come from batch means: the run is cut into ``batches`` equal spans,
each span's availability is one observation, and Student's t gives the 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import networkx as nx
import numpy as np
import pandas as pd

from hasim.sim.records import FaultRecord

Proc = tuple[str, str]
ETCD_QUORUM = "etcd-quorum"


Segment = tuple[float, float, frozenset[Proc], frozenset[str], frozenset[frozenset[str]]]


def _segments(faults: Iterable[FaultRecord], duration: float) -> list[Segment]:
    """Piecewise-constant states: (start, end, procs down, hosts down, blocked pairs)."""
    changes: dict[float, list[tuple[FaultRecord, bool]]] = {}
    for f in faults:
        changes.setdefault(f.at, []).append((f, True))
        if f.end is not None and f.end < duration:
            changes.setdefault(f.end, []).append((f, False))
    times = sorted(t for t in changes if t < duration)
    active: list[FaultRecord] = []
    out = []
    t0 = 0.0
    for t in times + [duration]:
        if t > t0:
            procs: set[Proc] = set()
            hosts: set[str] = set()
            pairs: set[frozenset[str]] = set()
            for f in active:
                if f.kind == "poweroff":
                    hosts |= f.hosts
                elif f.kind == "partition":
                    pairs |= set(f.pairs)
                elif f.kind in {"crash", "stop", "lb-crash"}:
                    procs |= f.procs
            out.append((t0, t, frozenset(procs), frozenset(hosts), frozenset(pairs)))
        for f, starts in changes.get(t, []):
            if starts:
                active.append(f)
            elif f in active:
                active.remove(f)
        t0 = t
    return out


class _State:
    def __init__(self, g: nx.DiGraph, procs: frozenset[Proc], hosts: frozenset[str],
                 pairs: frozenset[frozenset[str]]) -> None:
        self.g, self.procs, self.hosts, self.pairs = g, procs, hosts, pairs
        members = [n for n, d in g.nodes(data=True) if d["component"] == "etcd"]
        self.members = members
        up = [m for m in members if self.up(m)]
        quorum = len(members) // 2 + 1
        # A leader needs a majority of members up and connected to each other: the members
        # that see a majority are the ones a leader can be among.
        self.quorate = [m for m in up if sum(1 for o in up if self.link(m, o)) >= quorum]
        self.leader_ok = not members or bool(self.quorate)

    def host(self, n: str) -> str:
        return str(self.g.nodes[n]["host"])

    def up(self, n: str) -> bool:
        d = self.g.nodes[n]
        if d.get("virtual"):
            return True
        return d["host"] not in self.hosts and (d["host"], d["component"]) not in self.procs

    def link(self, a: str, b: str) -> bool:
        ha, hb = self.host(a), self.host(b)
        if self.g.nodes[a].get("virtual") or self.g.nodes[b].get("virtual"):
            return True
        return ha == hb or frozenset((ha, hb)) not in self.pairs

    def reaches(self, start: str, purpose: str, goal: str) -> bool:
        """A path of live components and links from ``start`` to a working ``goal``."""
        g = self.g
        seen = {start}
        stack = [start]
        while stack:
            n = stack.pop()
            for v in g.successors(n):
                if v in seen or g.edges[n, v]["purpose"] != purpose:
                    continue
                if not (self.up(v) and self.link(n, v)):
                    continue
                comp = g.nodes[v]["component"]
                seen.add(v)
                if comp == goal:
                    # An apiserver must serve; an etcd member answers only when it reaches
                    # a leader (a follower forwards to it). One that cannot is no answer,
                    # but the client may still have another: perfect failover tries them
                    # all. (Before, the search stopped at the first one it met, so the
                    # result hung on the graph's edge order: a local LB whose first
                    # apiserver was up but cut from etcd counted as down.)
                    if (self.serving(v) if goal == "apiserver" else self.member_serves(v)):
                        return True
                    continue
                stack.append(v)
        return False

    def member_serves(self, member: str) -> bool:
        """An up etcd member commits a request when it is linked to a member that sees a
        majority (the leader is among those; etcd ``EtcdCluster.committed``)."""
        return any(self.link(member, q) for q in self.quorate)

    def serving(self, api: str) -> bool:
        return self.leader_ok and self.reaches(api, "etcd", "etcd") if self.members else True


def structural(g: nx.DiGraph, faults: list[FaultRecord], duration: float,
               batches: int = 20) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Per client (and the etcd quorum), the fraction of time with a working path, and per
    client class [mean, low, high] of the 95% batch-means interval."""
    clients = [(n, d) for n, d in g.nodes(data=True) if d.get("client_class")]
    edges = np.linspace(0.0, duration, batches + 1)
    up_time = {n: np.zeros(batches) for n, _ in clients}
    up_time[ETCD_QUORUM] = np.zeros(batches)
    for t0, t1, procs, hosts, pairs in _segments(faults, duration):
        st = _State(g, procs, hosts, pairs)
        # the share of [t0, t1) in each batch
        share = np.clip(np.minimum(edges[1:], t1) - np.maximum(edges[:-1], t0), 0.0, None)
        if st.leader_ok:
            up_time[ETCD_QUORUM] += share
        for n, d in clients:
            if not st.up(n):
                continue  # the client's own process is down: not counted as available
            purpose = "etcd" if d["component"] == "flannel" else "apiserver"
            if st.reaches(n, purpose, "etcd" if purpose == "etcd" else "apiserver"):
                up_time[n] += share
    span = np.diff(edges)
    rows = []
    per_class: dict[str, list[np.ndarray]] = {}
    for n, d in clients:
        frac = up_time[n] / span
        per_class.setdefault(d["client_class"], []).append(frac)
        rows.append((n, d["host"], d["client_class"], float(up_time[n].sum()), duration,
                     float(up_time[n].sum() / duration)))
    q = up_time[ETCD_QUORUM] / span
    per_class[ETCD_QUORUM] = [q]
    rows.append((ETCD_QUORUM, "", ETCD_QUORUM, float(up_time[ETCD_QUORUM].sum()), duration,
                 float(up_time[ETCD_QUORUM].sum() / duration)))
    table = pd.DataFrame(rows, columns=["client", "host", "client_class", "available_s",
                                        "observed_s", "fraction"])
    return table, {cls: batch_ci(np.mean(fracs, axis=0)) for cls, fracs in per_class.items()}


def batch_ci(values: np.ndarray, level: float = 0.95) -> list[float]:
    """[mean, low, high]: Student-t interval of the mean of batch values."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return [mean, math.nan, math.nan]
    # Imported here: scipy.stats takes 1.5 s to import, which every batch worker and
    # every `hasim` command would pay for this one structural-fidelity figure.
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return [mean, mean - half, mean + half]

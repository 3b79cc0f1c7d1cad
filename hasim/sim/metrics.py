"""Result tables (CONTRACT.md), built once from the plain records at the end of a run."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hasim.sim.records import REQUEST_COLUMNS, STATE_COLUMNS, FaultRecord, Recorder

LB_COMPONENT_PREFIXES = ("lb", "external-lb")


@dataclass
class SimResult:
    """One run's tables (pandas DataFrames) and headline figures."""

    failovers: pd.DataFrame
    detections: pd.DataFrame
    health_checks: pd.DataFrame
    node_status: pd.DataFrame
    requests: pd.DataFrame
    state_changes: pd.DataFrame
    availability: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    TABLES = (
        "failovers",
        "detections",
        "health_checks",
        "node_status",
        "requests",
        "state_changes",
        "availability",
    )

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every result table by name."""
        return {name: getattr(self, name) for name in self.TABLES}


def _typed(rows: list[Any], dtypes: dict[str, str]) -> pd.DataFrame:
    """A table with its column types fixed, so that an empty one has them too."""
    return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)


def _window_ends(faults: list[FaultRecord], duration: float) -> dict[int, float]:
    """Each fault's attribution window ends where the next fault starts."""
    starts = sorted((f.at, f.fault_id) for f in faults)
    ends: dict[int, float] = {}
    for k, (_, fid) in enumerate(starts):
        ends[fid] = starts[k + 1][0] if k + 1 < len(starts) else duration
    return ends


def failovers(rec: Recorder, clients: dict[str, tuple[str, str]], duration: float) -> pd.DataFrame:
    """One row per (fault, client): when it first failed and when it got through again.

    ``clients`` maps a client name to its (host, client class). Clients on a host the
    fault took down, or whose own process the fault killed, are not listed: they are
    the fault, not its victims.
    """
    per_client: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for client, _h, start, end, outcome, _b, _k in rec.requests:
        per_client[client].append((start, end, outcome))
    ends = _window_ends(rec.faults, duration)
    rows = []
    for f in sorted(rec.faults, key=lambda f: f.at):
        for client, (host, _cls) in clients.items():
            comp = client.split("/", 1)[1]
            if (host in f.hosts and f.kind in {"crash", "poweroff"} and
                    (host, comp) in f.procs) or (f.kind == "partition" and host in f.hosts):
                continue
            first_fail = None
            for start, end, outcome in per_client.get(client, ()):
                if outcome != "ok" and end >= f.at and max(start, f.at) < ends[f.fault_id]:
                    first_fail = (max(start, f.at), start)
                    break
            if first_fail is None:
                rows.append((f.fault_id, f.kind, f.target, f.at, client, host, math.nan,
                             math.nan, 0.0))
                continue
            recovered = math.inf
            for start, end, outcome in per_client[client]:
                if outcome == "ok" and start >= first_fail[1] and end >= first_fail[0]:
                    recovered = end
                    break
            latency = recovered - f.at
            rows.append((f.fault_id, f.kind, f.target, f.at, client, host, first_fail[0],
                         recovered, latency))
    return _typed(rows, {"fault_id": "int64", "fault_kind": "object", "target": "object",
                         "fault_at": "float64", "client": "object", "host": "object",
                         "first_failure_at": "float64", "recovered_at": "float64",
                         "latency_s": "float64"})


def _fault_for(faults: list[FaultRecord], host: str, t: float) -> FaultRecord | None:
    best = None
    for f in faults:
        if f.at <= t and host in f.hosts and (best is None or f.at > best.at):
            best = f
    return best


def detections(rec: Recorder) -> pd.DataFrame:
    """One row per (fault, balancer, backend) that marked the backend down: the first."""
    rows: dict[tuple[int, str, str], tuple[Any, ...]] = {}
    for time, comp, host, subject, _old, new, _cause in rec.states:
        if new != "down" or not comp.startswith(LB_COMPONENT_PREFIXES):
            continue
        f = _fault_for(rec.faults, subject, time)
        if f is None:
            continue
        base = comp.split("[", 1)[0]
        balancer = f"{host}/{base}"
        key = (f.fault_id, balancer, subject)
        if key not in rows:
            worker = comp[comp.index("[") + 2 : -1] if "[" in comp else ""
            rows[key] = (f.fault_id, balancer, host, subject, time, time - f.at, worker)
    return _typed(list(rows.values()), {"fault_id": "int64", "balancer": "object",
                                        "host": "object", "backend": "object",
                                        "detected_at": "float64", "detect_s": "float64",
                                        "worker": "object"})


def health_checks(rec: Recorder, duration: float) -> pd.DataFrame:
    """Checks and connections per (source, target, kind), with their rate over the run."""
    rows = [(s, t, k, n, n / duration) for (s, t, k), n in sorted(rec.checks.items())]
    return _typed(rows, {"source": "object", "target": "object", "kind": "object",
                         "count": "int64", "rate_per_s": "float64"})


def node_status(rec: Recorder, duration: float) -> pd.DataFrame:
    """One row per NotReady interval of a node."""
    open_: dict[str, float] = {}
    rows = []
    for time, comp, host, _s, _old, new, _c in rec.states:
        if comp != "node-lifecycle":
            continue
        if new == "not-ready":
            open_[host] = time
        elif new == "ready" and host in open_:
            t0 = open_.pop(host)
            rows.append((host, t0, time, time - t0))
    for host, t0 in open_.items():
        rows.append((host, t0, math.nan, duration - t0))
    df = _typed(rows, {"host": "object", "not_ready_at": "float64", "ready_at": "float64",
                       "duration_s": "float64"})
    return df.sort_values(["not_ready_at", "host"], ignore_index=True)


def availability(rec: Recorder, clients: dict[str, tuple[str, str]], duration: float
                 ) -> pd.DataFrame:
    """Per client, the time it could reach an apiserver: from a failed request to the end
    of the next successful one counts as unavailable."""
    per_client: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for client, _h, start, end, outcome, _b, _k in rec.requests:
        per_client[client].append((start, end, outcome))
    rows = []
    for client, (host, cls) in clients.items():
        down = 0.0
        since: float | None = None
        for start, end, outcome in sorted(per_client.get(client, ())):
            if outcome != "ok":
                if since is None:
                    since = start
            elif since is not None and start >= since:
                down += end - since
                since = None
        if since is not None:
            down += duration - since
        down = min(down, duration)
        rows.append((client, host, cls, duration - down, duration, (duration - down) / duration))
    return pd.DataFrame(rows, columns=["client", "host", "client_class", "available_s",
                                       "observed_s", "fraction"])


def build_result(rec: Recorder, clients: dict[str, tuple[str, str]], duration: float,
                 summary: dict[str, Any], config: dict[str, Any]) -> SimResult:
    """All tables of a run and its headline figures."""
    fo = failovers(rec, clients, duration)
    det = detections(rec)
    ns = node_status(rec, duration)
    req = _typed(rec.requests, dict(zip(REQUEST_COLUMNS, ("object", "object", "float64",
                                                          "float64", "object", "object",
                                                          "object"), strict=True)))
    st = _typed(rec.states, dict(zip(STATE_COLUMNS, ("float64",) + ("object",) * 6,
                                     strict=True)))
    hc = health_checks(rec, duration)
    av = availability(rec, clients, duration)
    finite = fo["latency_s"][np.isfinite(fo["latency_s"])]
    summary = {
        **summary,
        "requests": len(req),
        "failed_requests": int((req["outcome"] != "ok").sum()) if len(req) else 0,
        "faults": len(rec.faults),
        "clients_failed": int((fo["latency_s"] > 0).sum()) if len(fo) else 0,
        "clients_never_recovered": int(np.isinf(fo["latency_s"]).sum()) if len(fo) else 0,
        "failover_mean_s": float(finite[finite > 0].mean()) if (finite > 0).any() else 0.0,
        "failover_max_s": float(fo["latency_s"].max()) if len(fo) else 0.0,
        "nodes_not_ready": int(ns["host"].nunique()) if len(ns) else 0,
        "not_ready_node_s": float(ns["duration_s"].sum()) if len(ns) else 0.0,
        "detections": len(det),
        "active_checks_per_s": float(hc.loc[hc["kind"] == "active", "rate_per_s"].sum()),
    }
    return SimResult(fo, det, hc, ns, req, st, av, summary, config)

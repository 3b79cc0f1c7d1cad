"""Result tables (docs/interfaces.md), built once from the plain records at the end of a run."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hasim.sim.records import (
    REQUEST_COLUMNS,
    STATE_COLUMNS,
    TEXT_COLUMNS,
    TIME_COLUMNS,
    FaultRecord,
    Recorder,
)

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
    #: Where the wall time went (seconds): ``setup_s`` (topology, parts), ``run_s`` (the
    #: SimPy event loop alone, what benchmarks/run.py divides the events by) and
    #: ``tables_s``. Machine figures, kept out of ``summary`` so that runs compare.
    timing: dict[str, float] = field(default_factory=dict)
    #: Extra tables of the model's own events, outside docs/interfaces.md's list: etcd raft
    #: elections (``time``, ``member``, ``term``, ``lost_at``, ``last_heartbeat_at``,
    #: ``election_s``) and VIP takeovers (``time``, ``from``, ``to``, ``lost_at``,
    #: ``takeover_s``).
    elections: pd.DataFrame = field(default_factory=pd.DataFrame)
    vip_moves: pd.DataFrame = field(default_factory=pd.DataFrame)

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
    """A table with its column types fixed, so that an empty one has them too.

    Built as objects first and only the other columns converted: left to infer, pandas
    turns every text column into Arrow strings, which ``astype(object)`` then turns back
    (three times slower, as measured on the requests table of a big run; that table is
    now made from the request log's columns, :func:`requests_table`)."""
    df = pd.DataFrame(rows, columns=list(dtypes), dtype=object)
    other = {c: t for c, t in dtypes.items() if t != "object"}
    return df.astype(other) if other else df


def _window_ends(faults: list[FaultRecord], duration: float) -> dict[int, float]:
    """Each fault's attribution window: from the fault to where the next fault starts, or
    where it heals if that comes first. A failure that starts after the heal is not the
    failover's but the failback's (keepalived's preempt taking the VIP back resets every
    connection through the VIP, docs/model.md, the VIP): counted in, it made a client that never
    failed while the fault held look cut off from the fault to the heal and beyond. It
    still shows in ``availability`` and ``vip_moves``."""
    starts = sorted((f.at, f.fault_id, f.end) for f in faults)
    ends: dict[int, float] = {}
    for k, (_, fid, healed) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else duration
        ends[fid] = end if healed is None else min(end, healed)
    return ends


#: Per client that had a failed request: all its requests (start, end, outcome) in the
#: order recorded, and its failed ones alone (:func:`_per_client`).
Requests = dict[str, list[tuple[float, float, str]]]
History = tuple[Requests, Requests]


def failovers(rec: Recorder, clients: dict[str, tuple[str, str]], duration: float,
              history: History | None = None) -> pd.DataFrame:
    """One row per (fault, client): when it first failed and when it got through again.

    ``clients`` maps a client name to its (host, client class). Clients on a host the
    fault took down, or whose own process the fault killed, are not listed: they are
    the fault, not its victims. A client's first failure must start in the fault's
    window (:func:`_window_ends`: until it heals or the next fault starts); its recovery
    may come later. ``history``: :func:`_per_client` of ``rec``, when the caller has it
    already (it is one pass over every request).
    """
    per_client, failed = history if history is not None else _per_client(rec)
    ends = _window_ends(rec.faults, duration)
    rows = []
    for f in sorted(rec.faults, key=lambda f: f.at):
        for client, (host, _cls) in clients.items():
            comp = client.split("/", 1)[1]
            if (host in f.hosts and f.kind in {"crash", "poweroff"} and
                    (host, comp) in f.procs) or (f.kind == "partition" and host in f.hosts):
                continue
            first_fail = None
            # Only failed requests can be a first failure: scan those alone (most clients
            # of a big cluster have none), in the order they were recorded.
            for start, end, _outcome in failed.get(client, ()):
                if end >= f.at and max(start, f.at) < ends[f.fault_id]:
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


def _per_client(rec: Recorder) -> History:
    """:func:`_history` of ``rec``'s requests."""
    return _history(requests_table(rec))


def _history(req: pd.DataFrame) -> History:
    """The requests (start, end, outcome) of each client that had a failed one, in the
    order recorded, and its failed ones alone. Clients that never failed are left out:
    most of a big cluster's, whose requests need no look.

    Read from the requests table's columns (contiguous arrays) rather than from the
    records: at 10,000 nodes a walk over the 1.8 million record tuples, scattered over
    the heap the run filled, took a second for each of the two passes."""
    outcome = req["outcome"].to_numpy()
    client = req["client"].to_numpy()
    bad = outcome != "ok"
    failed: Requests = defaultdict(list)
    per_client: Requests = defaultdict(list)
    if not bad.any():
        return per_client, failed
    start = req["start"].to_numpy()
    end = req["end"].to_numpy()
    mine = req["client"].isin(pd.unique(client[bad])).to_numpy()
    for c, s, e, o in zip(client[mine].tolist(), start[mine].tolist(), end[mine].tolist(),
                          outcome[mine].tolist(), strict=True):
        row = (s, e, o)
        per_client[c].append(row)
        if o != "ok":
            failed[c].append(row)
    return per_client, failed


def requests_table(rec: Recorder) -> pd.DataFrame:
    """The ``requests`` table (docs/interfaces.md) of ``rec``: one row per request, in the order
    recorded. Made from the log's two blocks (:meth:`RequestLog.arrays`) without a copy:
    the texts stay ``object`` (pandas 3 would infer Arrow strings, 3x slower to make),
    the times ``float64``."""
    texts, times = rec.requests.arrays()
    df = pd.DataFrame(texts.T, columns=list(TEXT_COLUMNS), dtype=object, copy=False)
    for row, name in enumerate(TIME_COLUMNS):
        df.insert(REQUEST_COLUMNS.index(name), name, times[row])
    return df


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
    """Checks and connections per (source, target, kind), with their rate over the run.

    In the order of the keys, sorted as columns: pandas ranks each column's distinct
    strings once and sorts integer codes, where ``sorted`` on the (source, target, kind)
    tuples compared strings all along (at 10,000 nodes, 60,000 keys out of the caches:
    0.44 s against 0.10 s; the same order, the keys being distinct)."""
    rows = [(s, t, k, n, n / duration) for (s, t, k), n in rec.check_counts().items()]
    df = _typed(rows, {"source": "object", "target": "object", "kind": "object",
                       "count": "int64", "rate_per_s": "float64"})
    return df.sort_values(["source", "target", "kind"], ignore_index=True)


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


def availability(rec: Recorder, clients: dict[str, tuple[str, str]], duration: float,
                 history: History | None = None) -> pd.DataFrame:
    """Per client, the time it could reach an apiserver: from a failed request to the end
    of the next successful one counts as unavailable. ``history`` as for
    :func:`failovers`."""
    per_client, failed = history if history is not None else _per_client(rec)
    rows = []
    for client, (host, cls) in clients.items():
        down = 0.0
        since: float | None = None
        # A client that never failed was available throughout (down stays 0): skip its
        # requests, most of a big cluster's.
        for start, end, outcome in sorted(per_client[client]) if client in failed else ():
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
                 summary: dict[str, Any], config: dict[str, Any],
                 weights: dict[str, float] | None = None) -> SimResult:
    """All tables of a run and its headline figures.

    ``weights`` (sampled clients, :mod:`hasim.sim.sampling`): nodes each sampled host
    stands for. Then failovers, node_status, availability, requests and health_checks get
    a ``weight`` column (1 for a host that stands for itself, and for every active-check
    row, which the aggregate makes exact) and the summary's counts are weighted sums: the
    full cluster's figures, estimated.
    """
    req = requests_table(rec)
    history = _history(req)  # both failovers and availability read it
    fo = failovers(rec, clients, duration, history)
    det = detections(rec)
    ns = node_status(rec, duration)
    st = _typed(rec.states, dict(zip(STATE_COLUMNS, ("float64",) + ("object",) * 6,
                                     strict=True)))
    hc = health_checks(rec, duration)
    av = availability(rec, clients, duration, history)
    if weights is not None:
        for df in (fo, ns, av, req):
            df["weight"] = _weight_of(df["host"], weights)
        hc["weight"] = _weight_of(hc["source"].str.split("/").str[0], weights)
        hc.loc[hc["kind"] == "active", "weight"] = 1.0
    fw = fo["weight"] if weights is not None else pd.Series(1.0, index=fo.index)
    nw = ns["weight"] if weights is not None else pd.Series(1.0, index=ns.index)
    rw = req["weight"] if weights is not None else pd.Series(1.0, index=req.index)
    lat = fo["latency_s"]
    cut = np.isfinite(lat) & (lat > 0)
    summary = {
        **summary,
        "requests": _count(rw.sum(), weights),
        "failed_requests": _count(rw[req["outcome"] != "ok"].sum(), weights),
        "faults": len(rec.faults),
        "clients_failed": _count(fw[lat > 0].sum(), weights),
        "clients_never_recovered": _count(fw[np.isinf(lat)].sum(), weights),
        "failover_mean_s": float((lat[cut] * fw[cut]).sum() / fw[cut].sum()) if cut.any()
        else 0.0,
        "failover_max_s": float(lat.max()) if len(fo) else 0.0,
        "nodes_not_ready": _count(nw.groupby(ns["host"]).first().sum(), weights),
        "not_ready_node_s": float((ns["duration_s"] * nw).sum()) if len(ns) else 0.0,
        "detections": len(det),
        "active_checks_per_s": float(hc.loc[hc["kind"] == "active", "rate_per_s"].sum()),
    }
    return SimResult(fo, det, hc, ns, req, st, av, summary, config)


def _weight_of(hosts: pd.Series, weights: dict[str, float]) -> pd.Series:
    return hosts.map(weights).astype("float64").fillna(1.0)


def _count(value: float, weights: dict[str, float] | None) -> int | float:
    """A count: an int, or a weighted estimate (float) with sampled clients."""
    return float(value) if weights is not None else int(round(float(value)))

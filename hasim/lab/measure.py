"""The lab's metrics, computed by ONE function from the records of a real or a simulated
trial, with the simulator's own table code (``hasim.sim.metrics``) wherever it has one.

A trial's records are the simulator's: requests ``(client, host, start, end, outcome,
backend, kind)``, LB state changes ``(time, component, host, subject, from, to, cause)``
and :class:`~hasim.sim.records.FaultRecord` s, times in seconds from the trial's start.

Metrics (one value per trial):

- ``detect_s``: fault to the first moment the LB stops choosing the faulted backend for
  new connections (``hasim.sim.metrics.detections``, first row of the backend). nginx:
  a worker's failed connect that makes the peer reach ``max_fails`` (its ``upstream
  server temporarily disabled`` warning; the first worker to do so); HAProxy: the server
  marked DOWN (``Server .../... is DOWN``). NaN when the LB never did within the trial.
- ``detect_workers``: how many LB processes marked the faulted backend down during the
  trial (nginx keeps one failure state per worker without ``zone``; HAProxy: 1).
- ``failover_s``: over the lab's clients, the worst of ``hasim.sim.metrics.failovers``'s
  ``latency_s`` (fault to the client's first successful request after its first failure;
  0 for a client that never failed, inf for one that never recovered).
  ``failover_short_s`` / ``failover_long_s``: the same for the short-connection client /
  the worst long-lived one.
- ``failed_requests``: requests that did not succeed from the first fault on;
  ``delayed_requests``: successful ones that took longer than ``DELAYED`` (a connect the
  LB retried elsewhere after a timeout).
- ``check_rate_per_s``: active health checks per second per backend that no fault hit,
  ``(n - 1) / (last - first)`` over the check times of the trial (at the stub: ``GET
  /healthz`` arrivals; in the simulator: check starts), averaged over those backends; 0
  when the LB sends none (nginx).
- ``recover_s`` (faults with a ``duration``): fault end to the end of the first request
  the recovered backend answered.
- ``request_s``: median time of a successful short request before the first fault (the
  loopback's speed, against the simulator's ``network.rtt``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hasim.sim.metrics import detections, failovers
from hasim.sim.records import FaultRecord, Recorder

Request = tuple[str, str, float, float, str, str, str]
State = tuple[float, str, str, str, str, str, str]

METRICS = ("detect_s", "detect_workers", "failover_s", "failover_short_s", "failover_long_s",
           "failed_requests", "delayed_requests", "check_rate_per_s", "recover_s", "request_s")
#: A successful request slower than this was held up by the fault (seconds).
DELAYED = 0.5


@dataclass
class TrialRecords:
    """Everything one trial (real or simulated) observed."""

    requests: list[Request]
    states: list[State]
    faults: list[FaultRecord]
    #: backend host -> times of the active health checks it received.
    check_times: Mapping[str, Sequence[float]]
    #: client name -> (host, client class ``short``/``long``).
    clients: Mapping[str, tuple[str, str]]
    duration: float
    lb_host: str
    backends: Sequence[str]
    extra: dict[str, Any] = field(default_factory=dict)


def _recorder(t: TrialRecords) -> Recorder:
    rec = Recorder()
    rec.requests.extend(sorted(t.requests, key=lambda r: (r[2], r[3])))
    rec.states = sorted(t.states)
    rec.faults = list(t.faults)
    return rec


def _worst(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) if vals else math.nan


def check_rate(times: Sequence[float]) -> float:
    """Checks per second from their times: ``(n - 1) / (last - first)``."""
    ts = sorted(times)
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return math.nan if ts else 0.0
    return (len(ts) - 1) / (ts[-1] - ts[0])


def trial_metrics(t: TrialRecords) -> dict[str, float]:
    """The metrics of one trial (see the module docstring)."""
    rec = _recorder(t)
    out: dict[str, float] = dict.fromkeys(METRICS, math.nan)
    if not t.faults:
        return out
    faulted = set().union(*(f.hosts for f in t.faults))
    first_at = min(f.at for f in t.faults)

    det = detections(rec)
    det = det[det["host"] == t.lb_host] if len(det) else det
    det = det[det["backend"].isin(faulted)] if len(det) else det
    if len(det):
        out["detect_s"] = float(det["detect_s"].min())
    out["detect_workers"] = float(len({comp for time, comp, host, subject, _o, new, _c
                                       in t.states if new == "down" and host == t.lb_host
                                       and subject in faulted and time >= first_at}))

    fo = failovers(rec, dict(t.clients), t.duration)
    if len(fo):
        lat = fo["latency_s"].astype(float)
        cls = fo["client"].map(lambda c: t.clients[c][1])
        out["failover_s"] = _worst(lat)
        out["failover_short_s"] = _worst(lat[cls == "short"])
        out["failover_long_s"] = _worst(lat[cls == "long"])

    out["failed_requests"] = float(sum(1 for r in t.requests
                                       if r[4] != "ok" and r[3] >= first_at))

    out["delayed_requests"] = float(sum(1 for r in t.requests if r[4] == "ok" and
                                        r[3] >= first_at and r[3] - r[2] > DELAYED))

    healthy = [b for b in t.backends if b not in faulted]
    rates = [check_rate(t.check_times.get(b, ())) for b in healthy]
    rates = [r for r in rates if not math.isnan(r)]
    out["check_rate_per_s"] = float(np.mean(rates)) if rates else math.nan

    recs = []
    for f in t.faults:
        if f.end is None:
            continue
        served = [r[3] for r in t.requests
                  if r[4] == "ok" and r[5] in f.hosts and r[2] >= f.end]
        recs.append(min(served) - f.end if served else math.inf)
    if recs:
        out["recover_s"] = max(recs)

    before = [r[3] - r[2] for r in t.requests
              if r[6] == "short" and r[4] == "ok" and r[3] < first_at]
    if before:
        out["request_s"] = float(np.median(before))
    return out

"""Writes while etcd elects a leader hang until etcd's request timeout (or the client's).

docs/model.md (etcd) and the lab's etcd write cell (docs/lab.md): a proposal made while a
member knows no live leader is forwarded to the dead leader or dropped, and waits for
etcd's ReqTimeout, 5 s + 2 x election timeout, before failing with "etcdserver: request
timed out"; a client timeout shorter than that ends it first. A write proposed once the
new leader exists succeeds. Expected values come from those formulas.
"""

from __future__ import annotations

import pytest

import hasim
from hasim.sim.etcd import request_timeout, writes_back_after
from hasim.spec.scenario import EtcdSpec, scenario_from_dict

SERVICE = 0.002  # apiserver.service_time
RTT = 0.0005


def _run(election: str) -> tuple[object, object]:
    # 43 kubelets, two heartbeat streams each every 10 s: several fall in any election.
    sc = scenario_from_dict({
        "name": "etcd-writes",
        "cluster": {"rules": "kubespray-2026-01", "generate": {"masters": 3, "etcd": 3,
                                                               "nodes": 40}},
        "etcd": {"election_timeout": election},
        "faults": [{"at": "30s", "target": "master1/etcd", "kind": "crash"}],
        "duration": "90s",
    })
    r = hasim.simulate(sc, seed=3)
    return r, r.elections


@pytest.mark.parametrize(("election", "kubelet_timeout"), [("1s", 10.0), ("5s", 10.0)])
def test_heartbeats_during_the_election_hang(election: str, kubelet_timeout: float) -> None:
    r, el = _run(election)
    e = float(election.rstrip("s"))
    new = el[el["lost_at"] >= 30.0].sort_values("time").iloc[0]
    lost, elected = float(new["lost_at"]), float(new["time"])
    req = r.requests
    during = req[(req["start"] > lost) & (req["start"] < elected - SERVICE - RTT)
                 & req["kind"].isin(["lease", "status", "register"])]
    assert len(during), "some heartbeat is proposed during the election"
    hang = 5.0 + 2 * e
    for row in during.itertuples():
        took = row.end - row.start
        if hang < kubelet_timeout:  # etcd gives up first: an error after ReqTimeout
            assert row.outcome == "error"
            assert took == pytest.approx(hang, abs=SERVICE + 4 * RTT)
        else:  # the kubelet's own timeout ends it
            assert row.outcome == "timeout"
            assert took == pytest.approx(kubelet_timeout, abs=SERVICE + 4 * RTT)
    after = req[(req["start"] > elected + 0.01) & req["kind"].isin(["lease", "status"])]
    assert (after["outcome"] == "ok").any()


@pytest.mark.parametrize(("election_s", "client_timeout", "expected"), [
    (1.2, 15.0, 7.0),   # one hang of ReqTimeout (5 + 2 x 1 s), then back
    (1.2, 1.0, 2.0),    # two client timeouts of 1 s, the second proposed mid-election
    (6.3, 15.0, 15.0),  # E = 5 s: ReqTimeout 15 s
    (0.5, 1.0, 1.0),
])
def test_writes_back_after(election_s: float, client_timeout: float, expected: float) -> None:
    e = 5.0 if election_s > 5 else 1.0
    spec = EtcdSpec(heartbeat_interval=0.1, election_timeout=e)
    assert request_timeout(spec) == 5.0 + 2 * e
    assert writes_back_after(election_s, client_timeout, spec) == pytest.approx(expected)

"""The in-cluster ``kubernetes`` Service (hasim.sim.service): its endpoints when a master
dies, from kube-apiserver's lease reconciler (``DefaultEndpointReconcilerInterval`` 10 s,
``DefaultEndpointReconcilerTTL`` 15 s; docs/model.md, "CNI agents"), and the CNI agents
that reach the apiservers through it."""

from __future__ import annotations

import numpy as np
from scipy import stats

import hasim
from hasim.spec.scenario import scenario_from_dict

K26 = "kubespray-2026-01"
EXT_LB = {"address": "10.9.9.9", "port": 8383}
# --- the Service's endpoints when a master dies -------------------------------------------

INTERVAL, TTL = 10.0, 15.0
FAULT_AT = 60.0


def _removal(seed: int) -> float:
    sc = scenario_from_dict({
        "name": "service-endpoints",
        "cluster": {"rules": K26, "generate": {"masters": 3, "etcd": 3, "nodes": 1},
                    "vars": {"loadbalancer_apiserver": EXT_LB}},
        "faults": [{"kind": "poweroff", "at": f"{FAULT_AT}s", "target": "master1"}],
        "duration": f"{FAULT_AT + TTL + INTERVAL + 1}s",
    })
    st = hasim.simulate(sc, seed=seed).state_changes
    gone = st[(st["component"] == "service") & (st["to"] == "removed")]
    # (A survivor whose renewal fell into the etcd election that master1's death began
    # cannot write it and may drop out for a while too: a 15 s TTL over a 10 s interval
    # leaves one missed renewal 5 s of margin.)
    dead = gone[gone["host"] == "master1"]
    assert len(dead) == 1, gone
    return float(dead["time"].iloc[0]) - FAULT_AT


def test_a_dead_master_leaves_the_service_after_its_lease_expires() -> None:
    """Each apiserver renews its lease key every 10 s (its own phase) with a 15 s TTL and
    rewrites the endpoints from the live keys. The dead master's last renewal was U(0, 10)
    before the death; its key expires 15 s later; the next reconcile of either survivor
    (each at its own phase) removes it: 15 - U1 + min(U2, U3), within [5, 25) s."""
    got = np.array([_removal(seed) for seed in range(60)])
    assert (got >= TTL - INTERVAL - 1e-9).all() and (got < TTL + INTERVAL).all(), got
    rng = np.random.default_rng(7)
    u = rng.uniform(0, INTERVAL, (20000, 3))
    ref = TTL - u[:, 0] + np.minimum(u[:, 1], u[:, 2])
    assert stats.ks_2samp(got, ref).pvalue > 0.01


def test_calico_nodes_reach_a_live_master_through_the_service() -> None:
    sc = scenario_from_dict({
        "name": "service-crash",
        "cluster": {"rules": K26, "generate": {"masters": 3, "etcd": 3, "nodes": 4},
                    "vars": {"loadbalancer_apiserver": EXT_LB}},
        "faults": [{"kind": "crash", "at": "30s", "target": "master1"}],
        "duration": "120s",
    })
    res = hasim.simulate(sc, seed=0)
    req = res.requests
    calico = req[req["client"].str.endswith("/calico-node") & (req["start"] > 30.0)]
    assert not calico.empty
    # every request after the crash is served by a surviving master, or fails on master1
    ok = calico[calico["outcome"] == "ok"]
    assert set(ok["backend"]) <= {"master2", "master3"}
    # and every calico-node that lost its connection got it back within the removal bound
    fo = res.failovers
    cf = fo[fo["client"].str.endswith("/calico-node") & fo["first_failure_at"].notna()]
    assert not cf.empty  # the agents whose connection was to master1, at least
    assert cf["recovered_at"].notna().all()
    assert (cf["recovered_at"] - 30.0 <= TTL + INTERVAL + 5.0).all(), cf

"""The simulated side of the lab (hasim.lab.simload): what it hands the comparison."""

from __future__ import annotations

import numpy as np

from hasim.lab.load import LoadSpec
from hasim.lab.simload import simulate_lab
from hasim.spec.scenario import scenario_from_dict


def test_every_active_check_is_timed_per_checked_host() -> None:
    """Current kubespray's local HAProxy (``inter 15s``, ``option httpchk``) on node1,
    no fault: each master is checked, and each check starts when the previous one ended
    plus ``inter`` (HAProxy re-arms the check task on completion). A check here takes a
    round trip for the connect, two for TLS and the GET, and one for the HTTP answer.
    The first checks of the n servers are spread over one ``inter`` from a random phase
    (HAProxy starts server i's checks ``inter * i / n`` after the first)."""
    inter, rtt, duration = 15.0, 0.0005, 120.0
    sc = scenario_from_dict({
        "name": "lab-check-times",
        "cluster": {"rules": "kubespray-2026-01", "generate": {"masters": 3, "etcd": 3, "nodes": 1},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": {"kind": "haproxy"}},
        "network": {"rtt": f"{rtt}s"},
        "duration": f"{duration}s",
    })
    trial = simulate_lab(sc, "node1", LoadSpec(), seed=0, t_start=1.0, duration=duration)
    assert sorted(trial.check_times) == ["master1", "master2", "master3"]
    first = trial.check_times["master1"][0]
    assert 0.0 <= first < inter
    for pos, host in enumerate(["master1", "master2", "master3"]):
        t = np.asarray(trial.check_times[host])
        assert abs(t[0] - (first + inter * pos / 3)) < 1e-9, host
        np.testing.assert_allclose(np.diff(t), inter + 4 * rtt, rtol=0, atol=1e-9)
        assert len(t) == int((duration - t[0]) // (inter + 4 * rtt)) + 1


def test_no_long_client_connects_at_the_instant_of_a_short_one() -> None:
    """The lab's load (both sides): the long clients' grids miss the short client's by
    at least the most three phases k/3 of a period can keep from a 1/rate grid
    (1/(6 rate), 8.3 ms at the default 20/s), so that nginx's worker 0 is idle when a
    long client connects, as at a node. The requests the simulated side records start
    on those grids."""
    load = LoadSpec()
    duration, t_start = 10.0, 1.0
    shorts = np.arange(0.0, duration, 1 / load.rate)
    for k in range(load.long_clients):
        longs = load.long_phase(k) + np.arange(0.0, duration, load.long_period)
        gap = np.abs(longs[:, None] - shorts[None, :]).min()
        assert gap >= 1 / (6 * load.rate) - 1e-9, (k, gap)
    sc = scenario_from_dict({
        "name": "lab-long-phases",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 1},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": {"kind": "nginx"}},
        "duration": f"{duration}s",
    })
    trial = simulate_lab(sc, "node1", load, seed=0, t_start=t_start, duration=duration)
    for k in range(load.long_clients):
        starts = sorted(r[2] for r in trial.requests if r[0] == f"node1/long-{k}")
        assert starts, k
        expected = t_start + load.long_phase(k) + load.long_period * np.arange(len(starts))
        np.testing.assert_allclose(starts, expected, rtol=0, atol=1e-9)

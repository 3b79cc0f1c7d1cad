"""The model leaves no cyclic garbage: what lets the event loop run without the cyclic
collector (hasim.sim.kernel.paused_gc).

Every scenario of ``scenarios/`` runs with the collector off during its event loop, as
``simulate`` always runs it; right after the loop a full collection must find nothing
unreachable among the objects the loop made. A component that left a cycle per event
(a session and a callback holding each other after close, say) would grow memory with
the run's length, and fails here by name.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from hasim.scenario import load_scenario
from hasim.sim import kernel
from hasim.sim.engine import simulate

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))


def _garbage_of_loops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the event loop to count the cyclic garbage each call of it leaves."""
    found: list[int] = []
    loop = kernel.Environment._loop

    def counted(env: kernel.Environment, stop: Any) -> None:
        assert not gc.isenabled(), "the loop runs without automatic collections"
        gc.collect()  # the garbage of the setup, before the loop
        gc.freeze()  # and what is alive now is not the loop's to answer for
        try:
            loop(env, stop)
        finally:
            found.append(gc.collect())

    monkeypatch.setattr(kernel.Environment, "_loop", counted)
    return found


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(ROOT / "scenarios")))
def test_the_event_loop_leaves_no_cycles(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _garbage_of_loops(monkeypatch)
    result = simulate(load_scenario(path), seed=0)
    assert result.summary["events"] > 0
    assert found and found == [0] * len(found), f"{path.name}: cyclic garbage {found}"


def test_a_long_structural_run_leaves_no_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The structural path (faults only, for years) runs the same loop, as long as any."""
    from hasim.scenario import scenario_from_dict

    found = _garbage_of_loops(monkeypatch)
    result = simulate(scenario_from_dict({
        "name": "structural-no-cycles",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 2},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": {"kind": "nginx"}},
        "fidelity": "structural",
        "duration": f"{2 * 365 * 24}h",
        "faults": [{"kind": "random", "targets": "kube-master", "mtbf": "500h",
                    "mttr": "8h", "fault": "crash"},
                   {"kind": "random", "targets": "etcd", "mtbf": "700h", "mttr": "24h",
                    "fault": "poweroff"}],
    }), seed=0)
    # 3 masters x 17,520 h / (500 + 8) h + 3 etcd x 17,520 h / (700 + 24) h: some 175 faults
    assert result.summary["faults"] > 50
    assert found == [0]


def test_a_cycle_per_event_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a run whose every kubelet heartbeat leaves a cycle fails it."""
    from hasim.sim import clients

    beats = clients.Kubelet._beats

    def leaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        for waited in beats(self, *args, **kwargs):
            cycle: list[Any] = []
            cycle.append(cycle)
            yield waited

    monkeypatch.setattr(clients.Kubelet, "_beats", leaky)
    found = _garbage_of_loops(monkeypatch)
    simulate(load_scenario(ROOT / "scenarios" / "local-lb.yaml"), seed=0)
    assert found and found[0] > 0

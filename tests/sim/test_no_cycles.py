"""The model leaves no cyclic garbage: what lets the event loop run without the cyclic
collector (hasim.sim.kernel.paused_gc); and a whole run, whose model ends as one big
cycle, frees it before ``simulate`` returns (hasim.sim.kernel.quiet_gc).

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

from hasim.sim import kernel
from hasim.sim.engine import simulate
from hasim.spec.scenario import load_scenario

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
    from hasim.spec.scenario import scenario_from_dict

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


def _left_by_a_run(name: str) -> tuple[int, int]:
    """Objects more than before, and cyclic garbage, once a run's result is dropped."""
    scenario = load_scenario(ROOT / "scenarios" / name)
    simulate(scenario, seed=0)  # first use: imports, caches
    gc.collect()
    alive = len(gc.get_objects())
    result = simulate(scenario, seed=1)
    assert result.summary["events"] > 0
    del result
    return len(gc.get_objects()) - alive, gc.collect()


@pytest.mark.parametrize("name", ["default-mode.yaml", "local-lb.yaml", "external-lb.yaml",
                                  "etcd-multiaccess.yaml"])
def test_a_run_frees_its_model_itself(name: str) -> None:
    """After ``simulate`` returns and its result is dropped, nothing of the run is left
    for a later collection: a batch worker's memory stays flat from run to run. (Left to
    CPython's heuristics, each 150-node run's model, about 50,000 objects, stayed until
    the worker exited; the check of the check below.)"""
    assert _left_by_a_run(name) == (0, 0)


def test_a_model_left_to_a_later_collection_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: the collector settings of the second round (freeze what the
    loop made, unfreeze it all at the end, no final collection) fail it."""
    from collections.abc import Iterator
    from contextlib import contextmanager

    from hasim.sim import engine

    @contextmanager
    def old_quiet_gc() -> Iterator[None]:
        before = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(100_000, 20, 100)
        try:
            yield
        finally:
            gc.set_threshold(*before)
            gc.unfreeze()

    @contextmanager
    def old_paused_gc() -> Iterator[None]:
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            gc.enable()

    monkeypatch.setattr(engine, "quiet_gc", old_quiet_gc)
    monkeypatch.setattr(kernel, "paused_gc", old_paused_gc)
    more, garbage = _left_by_a_run("local-lb.yaml")
    assert more > 1_000 and garbage > 1_000

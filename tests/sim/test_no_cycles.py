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

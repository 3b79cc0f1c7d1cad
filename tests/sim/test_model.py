"""Elaboration (hasim.sim.model): every kind the topology can hold has its builder, and a
graph the builders cannot wire fails before time zero with a message naming the node."""

from __future__ import annotations

import networkx as nx
import pytest

import hasim
import hasim.sim.engine as engine
from hasim.errors import HasimError
from hasim.graph.topology import LAYERS
from hasim.sim.model import builder_of
from hasim.spec.scenario import scenario_from_dict

SCENARIO = {"name": "elaboration", "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 2},
                                                "vars": {"loadbalancer_apiserver_localhost": True}},
            "balancers": {"local": {"kind": "nginx"}}, "duration": "5s"}
KINDS = {"lb": ("nginx", "haproxy"), "external-lb": ("haproxy",)}


def test_every_component_kind_of_the_topology_has_a_builder() -> None:
    for comp in LAYERS:
        for kind in KINDS.get(comp, (None,)):
            d = {"component": comp, "host": "h", **({"kind": kind} if kind else {})}
            assert builder_of(d) is not None, comp


def _simulate_with(monkeypatch: pytest.MonkeyPatch, change) -> None:
    real = engine.build_topology

    def patched(scenario: object) -> nx.DiGraph:
        g = real(scenario)
        change(g)
        return g

    monkeypatch.setattr(engine, "build_topology", patched)
    hasim.simulate(scenario_from_dict(SCENARIO), seed=0)


def test_an_unwired_client_fails_before_time_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def unwire(g: nx.DiGraph) -> None:
        g.remove_edges_from(list(g.out_edges("node1/kubelet")))

    with pytest.raises(HasimError, match="node1/kubelet has no connection to an apiserver"):
        _simulate_with(monkeypatch, unwire)


def test_a_kind_without_a_builder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def add(g: nx.DiGraph) -> None:
        g.add_node("node1/mystery", host="node1", component="mystery", layer=0)

    with pytest.raises(HasimError, match="node1/mystery"):
        _simulate_with(monkeypatch, add)

"""hasim: simulate the high availability of Kubernetes control-plane access.

The pipeline runs one way: scenario -> cluster -> endpoints -> topology graph -> simulated
components -> plain records -> DataFrames -> plots. The public API (docs/interfaces.md):
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hasim.errors import HasimError, ScenarioError
from hasim.kubespray.cluster import Cluster, Host
from hasim.kubespray.endpoints import Endpoints, evaluate_endpoints
from hasim.spec.scenario import Scenario, load_cluster, load_scenario

__version__ = "0.1.0"

if TYPE_CHECKING:
    import networkx


def build_topology(cluster_or_scenario: Any) -> networkx.DiGraph:
    """The component graph of a cluster or scenario (see :mod:`hasim.graph.topology`)."""
    from hasim.graph.topology import build_topology as _build

    return _build(cluster_or_scenario)


def simulate(scenario: Scenario, seed: int | None = None) -> Any:
    """Run a scenario once; returns a :class:`hasim.sim.metrics.SimResult`."""
    from hasim.sim.engine import simulate as _simulate

    return _simulate(scenario, seed)


def run_batch(paths_or_scenarios: Any, out: Any = None, reps: int | None = None,
              executor: str = "process", scheduler: str | None = None, **options: Any) -> Any:
    """Run scenarios x sweep points x replications into a result directory; returns one
    row per run as a pandas DataFrame (see :func:`hasim.batches.batch.run_batch`)."""
    from hasim.batches.batch import run_batch as _run_batch

    return _run_batch(paths_or_scenarios, out=out, reps=reps, executor=executor,  # type: ignore[arg-type]
                      scheduler=scheduler, **options)


def assess(path: Any, **options: Any) -> Any:
    """Assess the cluster of an inventory or scenario: every layout kubespray offers under
    the same faults, the verdict and the change to make; returns an
    :class:`hasim.assessment.assess.Assessment` (see :func:`hasim.assessment.assess.assess`)."""
    from hasim.assessment.assess import assess as _assess

    return _assess(path, **options)


def load_results(directory: Any) -> Any:
    """A result directory read back: ``.runs`` and each table (see :mod:`hasim.batches.results`)."""
    from hasim.batches.results import load_results as _load

    return _load(directory)


__all__ = [
    "assess",
    "load_results",
    "run_batch",
    "simulate",
    "Cluster",
    "Endpoints",
    "HasimError",
    "Host",
    "Scenario",
    "ScenarioError",
    "build_topology",
    "evaluate_endpoints",
    "load_cluster",
    "load_scenario",
]

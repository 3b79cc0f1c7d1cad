"""The lab: real nginx and HAProxy on loopback, in a network namespace, vs the simulator.

``run_lab(scenario, trials, out)`` starts stub apiservers (TLS, one address each) and the
scenario's load balancer as :func:`hasim.graph.render.render_config` writes it, drives it with
short and long-lived clients, applies the scenario's faults for real (SIGKILL, iptables
DROP), measures detection, failover and check rates, runs the same scenario and clients
in the simulator, and writes ``lab.parquet`` with the side-by-side table. Beside it,
:mod:`hasim.lab.etcd` (a real three-member etcd), :mod:`hasim.lab.keepalived` (a real
keepalived pair holding a VIP) and :mod:`hasim.lab.clientgo` (Go's HTTP/2 client as
client-go configures it), judged by :mod:`hasim.lab.judge` and gathered by
:mod:`hasim.lab.chain`. See ``docs/lab.md``.
"""

from hasim.lab.chain import chain_table, load_chain, run_chain
from hasim.lab.compare import TOLERANCE, agrees, format_table, side_by_side
from hasim.lab.figures import chain_figure, chain_finding, lb_figure, lb_finding
from hasim.lab.lab import load_lab, measure_scenario, run_lab, run_matrix
from hasim.lab.load import LoadSpec
from hasim.lab.matrix import calibration_matrix, lab_scenario
from hasim.lab.prereq import LabUnavailable

__all__ = [
    "TOLERANCE",
    "LabUnavailable",
    "LoadSpec",
    "agrees",
    "calibration_matrix",
    "chain_figure",
    "chain_finding",
    "chain_table",
    "format_table",
    "lab_scenario",
    "lb_figure",
    "lb_finding",
    "load_chain",
    "load_lab",
    "measure_scenario",
    "run_chain",
    "run_lab",
    "run_matrix",
    "side_by_side",
]

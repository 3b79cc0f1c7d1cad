"""hasim.analysis.formulas against docs/model.md's numbers; hasim.analysis.overhead and
hasim.analysis.compare against
the formulas and the endpoint rules; hasim.analysis.report's figure checks."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import hasim  # noqa: E402
from hasim.analysis.compare import fault_matrix, impact, lb_faults, victims  # noqa: E402
from hasim.analysis.formulas import haproxy_detection_window, keepalived_takeover_window  # noqa: E402
from hasim.analysis.overhead import expected_check_rate, steady_rates  # noqa: E402
from hasim.analysis.report import figure_problems, fmt, fmt_range, md_table, show  # noqa: E402
from hasim.spec.scenario import ExternalHAProxySpec, LocalHAProxySpec  # noqa: E402

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
RTT = 0.0005


# --- docs/model.md, HAProxy / the VIP windows -----------------------------------------------------

def test_haproxy_detection_window_at_haproxy_defaults() -> None:
    """docs/model.md, HAProxy: 'Defaults: refused 4-6 s, blackholed 10-12 s.'"""
    spec = ExternalHAProxySpec(check=True)  # inter 2 s, fall 3, no timeouts: HAProxy's own
    lo, hi = haproxy_detection_window(spec, RTT, blackholed=False)
    assert (lo, hi) == pytest.approx((4.0, 6.0), abs=0.01)
    assert haproxy_detection_window(spec, RTT, blackholed=True) == pytest.approx((10.0, 12.0))


def test_haproxy_detection_window_of_kubespray_local_haproxy() -> None:
    """docs/model.md, HAProxy: 'KS local haproxy: refused 15-30 s, blackholed roughly 45-60 s.'"""
    spec = LocalHAProxySpec()
    assert haproxy_detection_window(spec, RTT, False) == pytest.approx((15.0, 30.0), abs=0.01)
    assert haproxy_detection_window(spec, RTT, True) == pytest.approx((45.0, 60.0))


def test_keepalived_takeover_window_at_defaults() -> None:
    """docs/model.md, the VIP: '3A + skew - U(0, A) (2.61-3.61 s at defaults)'."""
    assert keepalived_takeover_window(1.0, 100) == pytest.approx((2.61, 3.61), abs=0.005)


# --- docs/model.md, closed forms: active check load, exactly --------------------------------------

def test_steady_check_rate_is_the_formula(tmp_path: Path) -> None:
    """Per apiserver: checking instances / (inter + d); 10 local HAProxies at inter 15 s."""
    base = hasim.load_scenario(SCENARIOS / "overhead" / "cluster-size.yaml")
    sc = base.with_overrides({"cluster.generate.nodes": 10, "balancers.local.kind": "haproxy",
                              "sweep": {"duration": ["25s", "55s"]}})
    hasim.run_batch([sc], out=tmp_path, reps=1, executor="serial", requests=False,
                    progress=False)
    rates = steady_rates(hasim.load_results(tmp_path))
    assert len(rates) == 1
    want = expected_check_rate(sc.with_overrides({"sweep": {}}))
    assert want == pytest.approx(10 / (15 + 4 * RTT))
    assert rates["checks_per_apiserver_s"].iloc[0] == pytest.approx(want, rel=0.02)
    assert rates["checkers"].iloc[0] == 10
    # nginx (no active checks) and an HAProxy without `check` make none
    assert expected_check_rate(sc.with_overrides({"balancers.local.kind": "nginx",
                                                  "sweep": {}})) == 0.0
    ext = hasim.load_scenario(SCENARIOS / "modes" / "external-lb-2016.yaml")
    assert expected_check_rate(ext) == 0.0


# --- the comparison matrix ----------------------------------------------------------------

@pytest.mark.parametrize("name,want", [
    ("default-mode-crash.yaml", []),
    ("local-lb-crash.yaml", [("lb-crash", "node1")]),
    ("external-lb-2016.yaml", [("crash", "extlb1"), ("poweroff", "extlb1")]),
    ("external-keepalived.yaml", [("crash", "extlb1"), ("poweroff", "extlb1")]),
    ("external-every-node.yaml", [("lb-crash", "node1")]),
])
def test_lb_faults_follow_the_topology(name: str, want: list[tuple[str, str]]) -> None:
    assert lb_faults(hasim.load_scenario(SCENARIOS / "modes" / name)) == want


def test_default_mode_only_the_first_master_matters(tmp_path: Path) -> None:
    """docs/model.md, the 2016 doc table, default row: every non-master reaches m[0] only. A crash
    of master1
    takes every worker NotReady and none of their clients gets back; a crash of master2
    touches no worker."""
    m = fault_matrix({"default": SCENARIOS / "modes" / "default-mode-crash.yaml"},
                     kinds=["crash"], masters=[0, 1], duration="3m")
    assert list(m.cells["fault"]) == ["crash master1", "crash master2"]
    hasim.run_batch(m.scenarios, out=tmp_path, reps=1, executor="serial", progress=False)
    res = hasim.load_results(tmp_path)
    per_run = impact(res, m.cells).set_index("fault")
    workers = len(m.scenarios[0].cluster.members("kube-node"))
    assert per_run.loc["crash master1", "not_ready_nodes"] == workers
    v = victims(res, m.cells)
    hit = v[(v["fault"] == "crash master1") & v["client_class"].str.endswith("@kube-node")
            & v["client_class"].str.startswith("kube")]
    assert len(hit) == 2 * workers and hit["latency_s"].map(math.isinf).all()
    assert per_run.loc["crash master2", "not_ready_nodes"] == 0
    assert per_run.loc["crash master2", "clients_cut_off"] == 0


# --- figures and prose --------------------------------------------------------------------

def test_figure_problems_and_show(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    assert len(figure_problems(fig)) == 3  # no title, no x label, no y label
    with pytest.raises(ValueError, match="cannot be read alone"):
        show(fig, "bad", tmp_path)
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    ax.set(title="Q?", xlabel="x (s)", ylabel="y (1/s)")
    assert figure_problems(fig) == []
    path = show(fig, "good", tmp_path)
    assert path == tmp_path / "good.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_prose_numbers() -> None:
    assert fmt(math.inf) == "never" and fmt(math.nan) == "n/a"
    assert fmt(1234.4, "nodes") == "1,234 nodes"
    assert fmt(0.4321, "s") == "0.43 s"
    assert fmt_range(44.81, 44.84, "s") == "44.8 s"
    assert fmt_range(1, 2) == "1 to 2"
    import pandas as pd

    assert "a \\| b" in md_table(pd.DataFrame({"x": ["a | b"]}))

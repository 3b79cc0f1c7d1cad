"""hasim.analysis.checkload on a small study (10 and 20 nodes, inter 2 s and 10 s): the
steady rates against the closed form (docs/model.md, closed forms: checking HAProxy
instances / (inter + d)), nginx's lack of active checks, nginx's ``proxy_timeout 3s``
churn (kubespray #655) against the later 10 minutes, and figures and findings written
from those numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import hasim
from hasim.analysis import checkload
from hasim.analysis.overhead import expected_check_rate, steady_rates
from hasim.analysis.report import figure_problems, fmt

ROOT = Path(__file__).resolve().parent.parent
#: Handshake prices of the budget: round numbers, so that the limits are exact.
BUDGET = checkload.Budget(share=0.1, handshake_s=1e-3, resumed_s=1e-4)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory):
    s = checkload.study(
        hasim.load_scenario(ROOT / "scenarios/overhead/cluster-size.yaml"),
        hasim.load_scenario(ROOT / "scenarios/overhead/external-lb-size.yaml"),
        hasim.load_scenario(ROOT / "scenarios/incidents/ks655.yaml"),
        sizes=[10, 20], other_sizes=[10, 20], churn_sizes=[10], intervals=[2, 10],
        interval_nodes=10, warmup=25, window=30)
    out = tmp_path_factory.mktemp("checkload")
    runs = hasim.run_batch(s.scenarios, out=out, reps=1, executor="process", jobs=2,
                           requests=False, progress=False)
    assert (runs["status"] == "ok").all()
    return s, steady_rates(hasim.load_results(out))


def test_the_budget_is_the_share_over_the_price() -> None:
    b = checkload.Budget.of(0.1, {"handshake_s": 2e-3, "ecdhe_s": 1e-4, "rsa_sign_s": 1.9e-3})
    assert b.full_per_s == pytest.approx(50.0)
    assert b.resumed_per_s == pytest.approx(1000.0)


def test_checks_by_size_follow_the_closed_form(measured) -> None:
    s, rates = measured
    t = checkload.by_size(rates, s)
    assert set(zip(t["lb"], t["nodes"], strict=True)) == {
        (lb, n) for lb in s.by_size for n in (10, 20)}
    for r in t.itertuples():
        want = expected_check_rate(s.by_size[r.lb].with_overrides(
            {checkload.NODES: int(r.nodes), "sweep": {}}))
        assert r.closed_form_s == pytest.approx(want)
        # the window is whole rounds of every inter: the steady rate is the closed form's
        assert r.checks_per_apiserver_s == pytest.approx(want, rel=0.02, abs=1e-9)
    # the closed form written out: kubespray's local HAProxy on each worker checks every
    # apiserver once per inter + d, d = 4 round trips (TCP, TLS, the GET /healthz)
    spec = s.by_size[checkload.LOCAL_HAPROXY].spec
    d = 4 * spec.network.rtt
    hap = t[t["lb"] == checkload.LOCAL_HAPROXY]
    assert hap["checks_per_apiserver_s"].tolist() == pytest.approx(
        [n / (spec.balancers.local.inter + d) for n in hap["nodes"]], rel=0.02)
    assert list(t["apiservers"]) == [3] * len(t)
    nginx = t[t["lb"] == checkload.LOCAL_NGINX]
    assert (nginx["checks_per_apiserver_s"] == 0).all()  # nginx has no active checks
    hap = t[t["lb"] == checkload.LOCAL_HAPROXY].set_index("nodes")["checks_per_apiserver_s"]
    assert hap.loc[20] > hap.loc[10]  # one checking HAProxy per node
    assert (t["connections_per_apiserver_s"] == 0).all()  # healthy: no one redials


def test_checks_by_interval_fall_as_the_closed_form_says(measured) -> None:
    s, rates = measured
    t = checkload.by_interval(rates, s)
    assert list(t["lb"]) == [checkload.INTER_LOCAL] * 2 + [checkload.INTER_EXTERNAL] * 2
    for label, key in [(checkload.INTER_LOCAL, "balancers.local.inter"),
                       (checkload.INTER_EXTERNAL, "balancers.external.inter")]:
        got = t[t["lb"] == label].set_index("inter_s")["checks_per_apiserver_s"]
        want = {i: expected_check_rate(s.by_interval[label].with_overrides(
            {key: i, "sweep": {}})) for i in (2, 10)}
        assert got.loc[2] / got.loc[10] == pytest.approx(want[2] / want[10], rel=0.02)
    finding = checkload.interval_finding(t, BUDGET)
    loc = t[t["lb"] == checkload.INTER_LOCAL].set_index("inter_s")["checks_per_node_s"]
    assert fmt(BUDGET.full_per_s / loc.loc[2]) in finding
    assert "kubespray's 15 s" not in finding  # 15 s was not swept here


def test_the_interval_window_is_whole_rounds_of_every_inter() -> None:
    def span(intervals: list[float]) -> list[str]:
        local = hasim.load_scenario(ROOT / "scenarios/overhead/cluster-size.yaml")
        external = hasim.load_scenario(ROOT / "scenarios/overhead/external-lb-size.yaml")
        churn = hasim.load_scenario(ROOT / "scenarios/incidents/ks655.yaml")
        st = checkload.study(local, external, churn, sizes=[10], other_sizes=[10],
                             churn_sizes=[10], intervals=intervals, interval_nodes=10,
                             warmup=25, window=30)
        return st.by_interval[checkload.INTER_LOCAL].spec.sweep["duration"]

    assert span([2, 5, 15]) == ["30s", "60s"]  # lcm 30 s, after 2 x 15 s
    assert span([2, 10]) == ["20s", "30s"]


def test_the_churn_finding_takes_the_shortest_timeout_whatever_the_order() -> None:
    t = pd.DataFrame({"timeout": ["10m", "10m", "3s", "3s"], "nodes": [10, 20, 10, 20],
                      "apiservers": [3] * 4,
                      "connections_per_apiserver_s": [0.0, 0.0, 5.0, 10.0]})
    t["connections_per_node_s"] = t["connections_per_apiserver_s"] * 3 / t["nodes"]
    text = checkload.churn_finding(t, BUDGET)
    # 5 / s per apiserver from 10 nodes: 1.5 per node per second, 4.5 every 3 s
    assert "every node re-opens 4.5 connections to the apiservers every 3 s" in text
    # 0.1 / 1e-3 = 100 handshakes/s per apiserver, at 0.5 per node per apiserver: 200 nodes
    assert "from about 200 nodes" in text
    assert "With `proxy_timeout` 10m no connection was re-opened" in text
    alone = checkload.churn_finding(t[t["timeout"] == "3s"], BUDGET)
    assert "proxy_timeout` 10m" not in alone


def test_a_3s_proxy_timeout_churns_and_10_minutes_do_not(measured) -> None:
    s, rates = measured
    t = checkload.churn(rates, s)
    by = t.set_index("timeout")["connections_per_apiserver_s"]
    assert list(by.index) == ["3s", "10m"]
    assert by.loc["3s"] > 0 and by.loc["10m"] == 0
    finding = checkload.churn_finding(t, BUDGET)
    assert "every 3 s" in finding and "no connection was re-opened" in finding


def test_figures_stand_alone_and_findings_quote_the_tables(measured) -> None:
    import matplotlib.pyplot as plt

    s, rates = measured
    size = checkload.by_size(rates, s)
    for fig in (checkload.size_figure(size, BUDGET),
                checkload.interval_figure(checkload.by_interval(rates, s), BUDGET, 20),
                checkload.churn_figure(checkload.churn(rates, s), BUDGET)):
        try:
            assert figure_problems(fig) == []
        finally:
            plt.close(fig)
    text = checkload.size_finding(size, BUDGET)
    hap = size[size["lb"] == checkload.LOCAL_HAPROXY]
    at_20 = float(hap.loc[hap["nodes"] == 20, "checks_per_apiserver_s"].iloc[0])
    assert text.startswith("**Finding.**") and fmt(at_20) in text
    assert "no health checks at all" in text
    per_node = float(hap["checks_per_node_s"].mean())
    assert fmt(BUDGET.full_per_s / per_node) in text

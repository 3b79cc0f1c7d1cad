"""hasim.analysis.failover on one replication of notebook 03's three timer sweeps (master1
powered off). The values asserted are those the modelled software decides (docs/model.md):
a legacy client waits for the kernel's tcp_retries2 and a modern one for its HTTP/2 ping
(read idle + ping timeout after its last read), nginx's tie-break puts every kubelet on
master1 so that a legacy profile takes every worker NotReady, and every HAProxy marks the
dead master down inside the closed-form window."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import hasim
from hasim.analysis import failover
from hasim.analysis.report import figure_problems, fmt

ROOT = Path(__file__).resolve().parent.parent
FILES = ["client-profile", "haproxy-timers", "nginx-timers"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory):
    sc = {f: hasim.load_scenario(ROOT / "scenarios/failover" / f"{f}.yaml") for f in FILES}
    out = tmp_path_factory.mktemp("failover")
    runs = hasim.run_batch(list(sc.values()), out=out, reps=1, executor="process", jobs=2,
                           progress=False)
    assert (runs["status"] == "ok").all()
    return sc, hasim.load_results(out)


def test_sweep_values_are_the_runs_own_columns(swept) -> None:
    sc, results = swept
    got = failover.sweep_values(results, sc["haproxy-timers"])
    assert list(got.columns) == ["run_id", "point", "replication", failover.INTER,
                                 failover.FALL]
    row = got[got["point"] == "inter=15s,fall=2"].iloc[0]
    assert row[failover.INTER] == "15s" and int(row[failover.FALL]) == 2


def test_not_ready_per_worker_has_every_worker_of_every_run(swept) -> None:
    sc, results = swept
    s = sc["nginx-timers"]
    nr = failover.not_ready_per_worker(results, s)
    n_runs = len(failover.runs_of(results, s))
    assert len(nr) == n_runs * len(failover.workers(s)) == 9 * 20
    assert (nr["duration_s"] >= 0).all()
    assert {failover.FAIL_TIMEOUT, failover.CONNECT_TIMEOUT} <= set(nr.columns)


def test_the_client_profile_decides_the_kubelets_failover(swept) -> None:
    sc, results = swept
    s = sc["client-profile"]
    pg = failover.profile_grace(results, s)
    assert pg.profiles == ["legacy", "closeconns", "modern"]
    assert pg.graces == ["40s", "50s"]
    med = pg.kubelets.groupby(failover.PROFILE)["latency_s"].median()
    legacy = s.with_overrides({"clients.profile": "legacy"}).spec.clients
    modern = s.with_overrides({"clients.profile": "modern"}).spec.clients
    # the kernel gives up tcp_retries2 after the first unacknowledged send, the kubelet's
    # next lease renewal or status update: at most one renew interval (10 s) after the fault
    assert legacy.tcp_retries2_timeout <= med.loc["legacy"] <= legacy.tcp_retries2_timeout + 10
    ping = modern.http2_read_idle_timeout + modern.http2_ping_timeout
    assert modern.http2_ping_timeout < med.loc["modern"] <= ping + 1
    legacy_nr = pg.not_ready[pg.not_ready[failover.PROFILE] == "legacy"]
    assert (legacy_nr["duration_s"] > 0).all()  # every worker, both graces
    text = failover.profile_finding(pg)
    assert text.startswith("**Finding.**")
    assert fmt(med.loc["legacy"], "s") in text and fmt(med.loc["modern"], "s") in text
    fig = failover.profile_figure(pg, reps=1)
    try:
        assert figure_problems(fig) == []
    finally:
        plt.close(fig)


def test_every_haproxy_detects_inside_the_closed_form_window(swept) -> None:
    sc, results = swept
    s = sc["haproxy-timers"]
    h = failover.haproxy_timers(results, s)
    assert h.points == ["inter=2s,fall=2", "inter=2s,fall=3", "inter=5s,fall=2",
                        "inter=5s,fall=3", "inter=15s,fall=2", "inter=15s,fall=3"]
    # kubespray puts the local HAProxy on the workers (a master talks to its own
    # apiserver): one detection per worker per run
    assert h.detections.groupby("point").size().eq(len(failover.workers(s))).all()
    assert (h.windows["inside"] == 1.0).all()
    assert (h.windows["lo_s"] < h.windows["hi_s"]).all()
    med = h.detections.groupby("point")["detect_s"].median()
    assert med.loc["inter=2s,fall=2"] < med.loc["inter=15s,fall=3"]
    text = failover.haproxy_finding(h)
    assert "100 % of the simulated detections" in text
    fig = failover.haproxy_figure(h)
    try:
        assert figure_problems(fig) == []
    finally:
        plt.close(fig)


def test_the_http2_ping_not_nginx_bounds_the_failover(swept) -> None:
    sc, results = swept
    s = sc["nginx-timers"]
    n = failover.nginx_timers(results, s)
    assert list(n.grids) == list(failover.NGINX_GRIDS)
    for grid in n.grids.values():
        assert list(grid.index) == ["2s", "10s", "30s"]
        assert list(grid.columns) == ["1s", "5s", "60s"]
    cl = s.spec.clients
    p95 = n.grids[failover.NGINX_GRIDS[2]].to_numpy()
    assert (p95 <= cl.http2_read_idle_timeout + cl.http2_ping_timeout + 1).all()
    assert len(n.reprobes) == 9
    text = failover.nginx_finding(n)
    # the finding says which it was, re-probes or none
    assert ("no worker's nginx ever re-probed" in text) == (n.reprobes.max() == 0)
    fig = failover.nginx_figure(n)
    try:
        assert figure_problems(fig) == []
    finally:
        plt.close(fig)


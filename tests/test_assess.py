"""``hasim assess`` on real inventory files: the verdict, the change, the report.

Expected values come from the model's facts (docs/model.md), not from earlier runs:

* the default layout points every node at the first master (the HA doc's default row):
  when that master crashes for good, every kubelet and kube-proxy of a worker node has
  no path left and never comes back, and every worker node goes NotReady (grace 40 s, far
  inside the 5 minutes after the fault); a recommendation must not be the default;
* a local nginx sends no health checks (passive checks only);
* kubespray's local HAProxy checks every apiserver from every node every ``inter`` (15 s):
  per apiserver, nodes / inter checks per second, less at most one check per pair over
  the run's window; two external HAProxy instances with ``inter`` 2 s: 2 / 2 s;
* a cluster with one master gets the advice to add masters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import hasim
from hasim.analysis.compare import NODE_CLASSES, victims
from hasim.assessment.assess import RUN_DURATION, assess
from hasim.assessment.layouts import classify
from hasim.assessment.tuning import knee, pareto
from hasim.cli import main
from hasim.kubespray.knobs import profile_for, read_knobs
from hasim.spec.scenario import cluster_from_inventory
from hasim.spec.units import parse_duration

WINDOW = parse_duration(RUN_DURATION) - 60.0  # the faults come at 60 s
NODES = ("node1", "node2", "node3")


def write_inventory(root: Path, names: str = "old", masters: int = 3,
                    group_vars: dict[str, Any] | None = None) -> Path:
    """``masters`` masters running etcd and three worker nodes, as an INI inventory."""
    master, node, k8s = (("kube-master", "kube-node", "k8s-cluster") if names == "old"
                         else ("kube_control_plane", "kube_node", "k8s_cluster"))
    root.mkdir(parents=True, exist_ok=True)
    ms = [f"master{i} ansible_host=10.0.0.{i}" for i in range(1, masters + 1)]
    ns = [f"{n} ansible_host=10.0.1.{i}" for i, n in enumerate(NODES, start=1)]
    text = "\n".join([f"[{master}]", *ms, "[etcd]", *[m.split()[0] for m in ms],
                      f"[{node}]", *ns, f"[{k8s}:children]", master, node]) + "\n"
    (root / "inventory.ini").write_text(text)
    if group_vars:
        (root / "group_vars").mkdir(exist_ok=True)
        (root / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    return root


@pytest.fixture(scope="module")
def default_mode(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # A 2016 inventory in the doc's default mode, Kubernetes 1.29 (modern clients).
    inv = write_inventory(tmp_path_factory.mktemp("inv") / "cluster",
                          group_vars={"kube_version": "v1.29.3",
                                      "loadbalancer_apiserver_localhost": False})
    out = tmp_path_factory.mktemp("out")
    return assess(inv, faults="crash,lb", reps=2, out=out, executor="serial",
                  tuning=False, progress=False)


def _cell(a: Any, layout: str, fault: str) -> dict[str, Any]:
    lo = next(x for x in a.layouts if x["name"] == layout)
    return next(f for f in lo["faults"] if f["fault"] == fault)


def test_default_layout_loses_every_node_client_when_m0_crashes(default_mode: Any) -> None:
    a = default_mode
    assert a.current == "default"
    v = victims(hasim.load_results(a.out), a.extras["victims_cells"])
    mine = v[(v["layout"] == "default") & (v["fault"] == "crash master1")
             & v["client_class"].isin(NODE_CLASSES)]
    # 3 nodes x (kubelet, kube-proxy) x 2 replications, none back.
    assert len(mine) == 12 and (mine["latency_s"] == float("inf")).all()
    cell = _cell(a, "default", "crash master1")
    assert cell["never_recovered"]["mean"] >= 6
    assert cell["not_ready_nodes"]["mean"] == 3
    assert cell["p95_failover_s"]["mean"] == pytest.approx(WINDOW)  # censored at the window
    # Behind a local nginx the same crash costs no node and every node client comes back.
    nginx = v[(v["layout"] == "local-nginx") & (v["fault"] == "crash master1")
              & v["client_class"].isin(NODE_CLASSES)]
    assert len(nginx) == 12 and (nginx["latency_s"] < float("inf")).all()
    assert _cell(a, "local-nginx", "crash master1")["not_ready_nodes"]["mean"] == 0


def test_recommendation_is_not_the_default_and_has_no_spof(default_mode: Any) -> None:
    a = default_mode
    rec = a.recommendation["layout"]
    assert rec != "default"
    by = {lo["name"]: lo for lo in a.layouts}
    assert by["default"]["spofs"] == ["master1/apiserver"]
    assert by["external-haproxy"]["spofs"] == ["extlb1/external-lb"]
    assert by[rec]["spofs"] == []
    assert "default" in a.recommendation["why"]
    ranks = {lo["name"]: lo["rank"] for lo in a.layouts}
    assert ranks["default"] > ranks[rec]


def test_nginx_sends_no_checks(default_mode: Any) -> None:
    lo = next(x for x in default_mode.layouts if x["name"] == "local-nginx")
    assert lo["checks_per_apiserver_s"] == 0
    assert all(f["fault"] in {"crash master1", "crash master2", "lb-crash node1"}
               for f in lo["faults"])


def test_figures_and_findings_of_the_default_mode(default_mode: Any) -> None:
    import matplotlib.pyplot as plt

    from hasim.analysis.report import figure_problems
    from hasim.assessment import figures

    a = default_mode
    never = figures.never_back(a)
    # the default layout's node clients talk to master1 only: its crash, one of the two
    # master crashes, strands every one of them; behind a local nginx none
    assert never["default"] == pytest.approx(0.5)
    assert never["local-nginx"] == 0
    assert "50 % of the worker-node clients of the default layout" in figures.failover_finding(a)
    worst = a.damage.loc[a.damage["client_time_lost_s_mean"].idxmax()]
    assert f"**{worst['layout']}** under **{worst['fault']}**" in figures.damage_finding(a)
    assert figures.tuning_front(a) is None  # tuning=False: nothing to draw
    for fig in (figures.damage(a), figures.failover_ecdf(a), figures.check_load(a)):
        try:
            assert figure_problems(fig) == []
        finally:
            plt.close(fig)
    heat = figures.damage(a)
    try:
        cells = a.damage.groupby(["layout", "fault"]).size()
        shown = [t.get_text() for t in heat.axes[0].texts if t.get_text() != "-"]
        assert len(shown) == len(cells)
    finally:
        plt.close(heat)


def test_assessment_json_is_the_documented_shape(default_mode: Any) -> None:
    doc = json.loads((default_mode.out / "assessment.json").read_text())
    assert {"cluster", "current", "layouts", "recommendation", "warnings"} <= set(doc)
    assert {"source", "rules", "hosts", "control_plane", "kubernetes_version",
            "client_profile"} <= set(doc["cluster"])
    assert doc["cluster"]["kubernetes_version"] == "1.29"
    assert doc["cluster"]["client_profile"] == "modern"
    assert doc["cluster"]["control_plane"] == ["master1", "master2", "master3"]
    for lo in doc["layouts"]:
        assert {"name", "vars", "extra_hosts", "spofs", "faults", "checks_per_apiserver_s",
                "rank"} <= set(lo)
        for f in lo["faults"]:
            for metric in ("not_ready_nodes", "client_time_lost_s", "p95_failover_s",
                           "never_recovered"):
                lo_, hi = f[metric]["ci"]
                assert lo_ <= f[metric]["mean"] <= hi
    assert {"layout", "vars", "tuning", "why"} <= set(doc["recommendation"])
    by = {lo["name"]: lo for lo in doc["layouts"]}
    assert by["external-haproxy-keepalived"]["extra_hosts"] == ["extlb1", "extlb2"]
    # Defaults the inventory did not set are listed as such.
    assert any("kube_controller_node_monitor_grace_period" in w for w in doc["warnings"])


def test_recommended_vars_round_trip(default_mode: Any, tmp_path: Path) -> None:
    # Apply recommended-vars.yml to the inventory as a user would (paste it into the file
    # it names, remove what it says to remove): the endpoints then show that layout.
    a = default_mode
    inv = tmp_path / "cluster"
    shutil.copytree(Path(a.cluster["source"]), inv)
    text = (a.out / "recommended-vars.yml").read_text()
    pasted = yaml.safe_load(text) or {}
    target = inv / Path(a.recommendation["file"]).relative_to(Path(a.cluster["source"]))
    current = yaml.safe_load(target.read_text()) if target.exists() else {}
    drop = [k for k, v in a.recommendation["vars"].items() if v is None]
    for k in drop:
        current.pop(k, None)
    current.update(pasted)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(current))
    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    assert classify(cluster, a.cluster["rules"]) == a.recommendation["layout"]


def test_rendered_configuration_and_report(default_mode: Any) -> None:
    a = default_mode
    names = set(a.files)
    assert {"assessment.json", "recommended-vars.yml", "report.html"} <= names
    assert ({"nginx.conf", "haproxy.cfg"} & names)
    page = (a.out / "report.html").read_text()
    assert "http://" not in page.replace("http://localhost", "").replace("http://127.0.0.1", "")
    assert page.count("data:image/png;base64,") >= 2
    assert "<script" not in page  # self-contained: figures embedded, nothing to fetch or run
    assert a.recommendation["layout"] in page


def test_rerun_resumes(default_mode: Any) -> None:
    markers = sorted((default_mode.out / "runs").rglob("*.json"))
    assert markers
    before = {p: p.stat().st_mtime_ns for p in markers}
    assess(default_mode.cluster["source"], faults="crash,lb", reps=2, out=default_mode.out,
           executor="serial", tuning=False, progress=False)
    assert {p: p.stat().st_mtime_ns for p in markers} == before


def test_report_in_a_real_browser(default_mode: Any, tmp_path: Path) -> None:
    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "chromium and chromium-driver are installed by `make test` (make system-deps)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or ""),
                              options=opts)
    try:
        driver.get((default_mode.out / "report.html").resolve().as_uri())
        assert "hasim assessment" in driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        images = driver.find_elements("tag name", "img")
        assert images and all(driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", im)
            for im in images)
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("L").getextrema()
    assert colours[0] < 100 < colours[1]  # text on a background: not a blank page


# --- formulas on today's inventory -----------------------------------------------------------


@pytest.fixture(scope="module")
def today(tmp_path_factory: pytest.TempPathFactory) -> Any:
    inv = write_inventory(tmp_path_factory.mktemp("inv26") / "cluster", names="new")
    return assess(inv, faults="etcd", reps=1, out=tmp_path_factory.mktemp("out26"),
                  executor="serial", tuning=True, progress=False)


def test_today_reads_the_inventory_with_todays_rules(today: Any) -> None:
    assert today.cluster["rules"] == "kubespray-2026-01"
    assert today.current == "local-nginx"  # kubespray's default today
    names = [lo["name"] for lo in today.layouts]
    assert names == ["default", "local-nginx", "local-haproxy", "external-haproxy-keepalived",
                     "kube-vip"]


def test_local_haproxy_checks_follow_the_formula(today: Any) -> None:
    # kubespray's haproxy.cfg: `inter 15s` on every node for every apiserver. Per
    # apiserver: nodes / inter, less at most one check per (node, apiserver) in the run.
    lo = next(x for x in today.layouts if x["name"] == "local-haproxy")
    run_s = parse_duration(RUN_DURATION)
    n = len(NODES)
    assert n / 15 * (1 - 15 / run_s) <= lo["checks_per_apiserver_s"] <= n / 15
    ext = next(x for x in today.layouts if x["name"] == "external-haproxy-keepalived")
    # 2 instances, `inter` 2 s (the external HAProxy's default): 2 / 2 s per apiserver.
    assert 2 / 2 * (1 - 2 / run_s) <= ext["checks_per_apiserver_s"] <= 2 / 2


def test_tuning_front_and_knee(today: Any) -> None:
    t = today.tuning
    assert len(t) >= 2
    assert t["knee"].sum() == 1
    k = t[t["knee"]].iloc[0]
    assert k["front"] and k["safe"]
    tune = today.recommendation["tuning"]
    assert tune["setting"] == k["label"]
    assert tune["front"] == list(t[t["front"]]["label"])
    page = (today.out / "report.html").read_text()
    assert "Pareto" in page


def test_pareto_and_knee_by_hand() -> None:
    import pandas as pd

    # (p95, checks): b is beaten by a on both; a, c, d trade one against the other.
    df = pd.DataFrame({"p95_failover_s": [2.0, 3.0, 1.0, 10.0],
                       "checks_per_apiserver_s": [1.0, 2.0, 4.0, 0.0]}, index=list("abcd"))
    assert list(pareto(df)) == [True, False, True, True]
    front = df[pareto(df)]
    # Scaled to the front: a (1/9, 1/4), c (0, 1), d (1, 0): a is nearest the corner.
    assert knee(front) == "a"


def test_one_master_gets_the_truth(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "one", masters=1,
                          group_vars={"loadbalancer_apiserver_localhost": True})
    a = assess(inv, faults="crash", reps=1, out=tmp_path / "out", executor="serial",
               tuning=False, progress=False)
    assert "one master" in a.recommendation["why"]
    assert "add masters" in a.recommendation["why"]
    assert all("master1/apiserver" in lo["spofs"] or lo["name"] == "etcd-multiaccess"
               or lo["spofs"] for lo in a.layouts)


# --- knobs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "profile"), [
    ("v1.4.3", "legacy"), ("1.10", "legacy"), ("1.11", "closeconns"), ("v1.19.16", "closeconns"),
    ("1.20", "modern"), ("v1.33.1", "modern")])
def test_profiles_by_version(version: str, profile: str) -> None:
    from hasim.kubespray.knobs import parse_version

    assert profile_for(parse_version(version, "x", "kube_version")) == profile


def test_knobs_from_the_inventory_and_defaults(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, names="new", group_vars={
        "kube_version": "v1.15.3", "kube_controller_node_monitor_grace_period": "50s",
        "etcd_election_timeout": "2500"})
    cluster = cluster_from_inventory(inv, source=str(inv), field="inventory")
    k = read_knobs(cluster, "kubespray-2026-01")
    assert k.client_profile == "closeconns"
    o = k.overrides()
    assert o["controller_manager.node_monitor_grace_period"] == 50.0
    assert o["etcd.election_timeout"] == 2.5
    assert o["etcd.heartbeat_interval"] == 0.25  # kubespray's "250" (ms), a default
    src = {x["name"]: x["source"] for x in k.as_list()}
    assert src["kube_version"] == "inventory" and src["etcd_heartbeat_interval"] == "default"
    assert read_knobs(cluster, "kubespray-2026-01", "1.29").client_profile == "modern"
    # 2016 defaults: kargo's kube_version v1.4.3 and its etcd election timeout of 10 s.
    bare = cluster_from_inventory(write_inventory(tmp_path / "b"), source="b", field="i")
    k16 = read_knobs(bare, "ha-mode-2016")
    assert k16.client_profile == "legacy"
    assert k16.overrides()["etcd.election_timeout"] == 10.0
    # etcd's --pre-vote: kubespray passes none, so etcd's default of the era holds (on from
    # etcd 3.5, today's; none in 2016) unless etcd_extra_vars sets ETCD_PRE_VOTE.
    assert o["etcd.pre_vote"] is True and k16.overrides()["etcd.pre_vote"] is False
    off = cluster_from_inventory(write_inventory(tmp_path / "p", group_vars={
        "etcd_extra_vars": {"ETCD_PRE_VOTE": "false"}}), source="p", field="i")
    k_off = read_knobs(off, "kubespray-2026-01")
    assert k_off.overrides()["etcd.pre_vote"] is False
    assert {x["name"]: x["source"] for x in k_off.as_list()}[
        "etcd_extra_vars.ETCD_PRE_VOTE"] == "inventory"


# --- bad input ----------------------------------------------------------------------------------


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path / "c")
    err = _error(["assess", str(inv), "--faults", "crash,meteor"], capsys)
    assert "unknown fault kind 'meteor'" in err and "crash, poweroff, partition, lb, etcd" in err
    err = _error(["assess", str(inv), "--kubernetes-version", "banana"], capsys)
    assert "'banana' is not a Kubernetes version" in err
    err = _error(["assess", str(tmp_path / "nowhere")], capsys)
    assert f"{tmp_path / 'nowhere'}: path does not exist" in err
    bad = write_inventory(tmp_path / "d", group_vars={
        "etcd_extra_vars": {"ETCD_PRE_VOTE": "maybe"}})
    err = _error(["assess", str(bad)], capsys)
    assert "'maybe' is not a boolean for ETCD_PRE_VOTE" in err
    assert "etcd_extra_vars.ETCD_PRE_VOTE" in err
    (tmp_path / "c" / "group_vars").mkdir()
    (tmp_path / "c" / "group_vars" / "all.yml").write_text("kube_version: 2.1\n")
    err = _error(["assess", str(inv), "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()  # refused before anything ran
    assert "kube_version" in err and "not a Kubernetes version" in err


def test_run_given_an_inventory_says_what_to_do(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path / "c") / "inventory.ini"
    err = _error(["run", str(inv)], capsys)
    assert "is an Ansible inventory, not a scenario" in err
    assert f"hasim assess {inv}" in err and "cluster: {inventory:" in err
    # A YAML inventory (kubespray's hosts.yaml) too; a malformed scenario is not one.
    yml = Path(__file__).resolve().parents[1] / "inventories" / "kubespray-current" / "hosts.yaml"
    assert "is an Ansible inventory" in _error(["run", str(yml)], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: 1m\n")
    assert "is an Ansible inventory" not in _error(["run", str(bad)], capsys)


def test_cli_summary(default_mode: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assess", default_mode.cluster["source"], "--faults", "crash,lb", "--reps", "2",
                 "--out", str(default_mode.out), "--executor", "serial", "--no-tuning",
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "current layout: default; single points of failure: master1/apiserver" in out
    assert f"recommendation: {default_mode.recommendation['layout']}" in out
    assert "recommended-vars.yml" in out

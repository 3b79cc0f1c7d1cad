"""hasim.analysis.modes on a small fault matrix (the default mode and one external HAProxy,
each master and the LB crashed or powered off). Expected facts are the modelled software's
(docs/model.md): in the default mode every worker talks to the first master only, so its
loss strands them; one external HAProxy without a VIP is a single point of failure whose
loss takes every node NotReady; a master's crash resets its connections (the clients redial
at once) while its power-off leaves them to client-go's HTTP/2 health check."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import hasim
from hasim.analysis import modes as ha
from hasim.analysis.compare import NODE_CLASSES, fault_matrix, impact, rank_modes, victims
from hasim.analysis.report import figure_problems

ROOT = Path(__file__).resolve().parent.parent
DEFAULT, EXTERNAL = "default (no LB)", "external HAProxy, 2020 fix"
MODES = {DEFAULT: "scenarios/modes/default-mode-crash.yaml",
         EXTERNAL: "scenarios/modes/external-lb-2020-fix.yaml"}


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory: pytest.TempPathFactory):
    matrix = fault_matrix({k: str(ROOT / v) for k, v in MODES.items()},
                          kinds=["crash", "poweroff"], at="60s", duration="3m")
    out = tmp_path_factory.mktemp("modes")
    runs = hasim.run_batch(matrix.scenarios, out=out, reps=1, executor="process", jobs=2,
                           progress=False)
    assert (runs["status"] == "ok").all()
    results = hasim.load_results(out)
    cells = matrix.cells
    return matrix, impact(results, cells), victims(results, cells)


def test_groups_follow_the_drawing_order(matrix_run) -> None:
    matrix, _, _ = matrix_run
    assert ha.groups_of(matrix.cells) == ["master crash", "master power-off", "LB crash",
                                          "LB power-off"]


def test_the_failover_finding_names_the_stranded_workers(matrix_run) -> None:
    matrix, _, vic = matrix_run
    text = ha.failover_finding(vic, ha.groups_of(matrix.cells))
    assert text.startswith("**Finding.**")
    assert f"in **{DEFAULT}**" in text and "never got back (after crash master1)" in text
    assert f"in **{EXTERNAL}**" in text and "(after crash extlb1)" in text
    fig = ha.failover_figure(vic, list(MODES), ha.groups_of(matrix.cells), reps=1)
    try:
        assert figure_problems(fig) == []
        assert len(fig.axes) == len(NODE_CLASSES) * 4
    finally:
        plt.close(fig)


def test_a_crash_is_redialled_and_a_power_off_waits_for_the_ping(matrix_run) -> None:
    matrix, _, vic = matrix_run
    cl = matrix.scenarios[0].spec.clients
    text = ha.crash_vs_poweroff(vic, [EXTERNAL], cl)
    cut = vic[vic["client_class"].isin(NODE_CLASSES) & vic["cut_off"]
              & (vic["mode"] == EXTERNAL) & (vic["target_role"] == "master")]
    crash = cut.loc[cut["fault_kind"] == "crash", "latency_s"]
    po = cut.loc[cut["fault_kind"] == "poweroff", "latency_s"]
    po = po[np.isfinite(po)]
    assert crash.median() < 10  # the RST: a redial through the LB
    assert po.median() > cl.http2_ping_timeout  # the ping fails only after its timeout
    assert "read idle 30 s + ping 15 s" in text


def test_the_lone_external_lb_takes_every_node_notready(matrix_run) -> None:
    matrix, per_run, _ = matrix_run
    means = ha.damage(per_run)
    nodes = len(matrix.scenarios[0].cluster.hosts)  # the same 3 masters and 5 workers
    assert means.loc[(EXTERNAL, "crash extlb1"), "not_ready_nodes"] == nodes
    text = ha.damage_finding(means, list(MODES), nodes)
    assert f"**{EXTERNAL}** under *crash extlb1* ({nodes} of {nodes} nodes" in text
    faults = list(dict.fromkeys(matrix.cells["fault"]))
    fig = ha.damage_figure(means, list(MODES), faults, nodes)
    try:
        assert figure_problems(fig) == []
        # a cell per (mode, fault) in each heat map, '-' for the default mode's LB faults
        assert sum(len(ax.texts) for ax in fig.axes) == 2 * len(MODES) * len(faults)
        assert sum(t.get_text() == "-" for ax in fig.axes for t in ax.texts) == 2 * 2
    finally:
        plt.close(fig)


def test_the_ranking_finding_names_both_single_points_of_failure(matrix_run) -> None:
    matrix, per_run, vic = matrix_run
    ranked = rank_modes(per_run, vic, matrix.cells)
    text = ha.ranking_finding(ranked, len(matrix.cells), reps=1)
    assert f"**{ranked.iloc[0]['mode']}** loses the least" in text
    spof = text.split("never got back): ")[1]
    assert DEFAULT in spof and EXTERNAL in spof

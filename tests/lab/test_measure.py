"""The lab's metrics on hand-made records (no lab needed): each expected value is worked
out from the definition in ``hasim.lab.measure``."""

from __future__ import annotations

import math

import pytest

from hasim.lab.measure import TrialRecords, check_rate, trial_metrics
from hasim.sim.records import FaultRecord


def _trial(**kw: object) -> TrialRecords:
    base: dict[str, object] = dict(
        requests=[], states=[], check_times={},
        faults=[FaultRecord(0, "crash", "master1", 2.0, None, frozenset({"master1"}),
                            frozenset({("master1", "apiserver")}))],
        clients={"node1/short": ("node1", "short"), "node1/long-0": ("node1", "long")},
        duration=10.0, lb_host="node1", backends=["master1", "master2"])
    base.update(kw)
    return TrialRecords(**base)  # type: ignore[arg-type]


def test_detection_is_the_first_mark_down_of_the_faulted_backend_by_this_lb() -> None:
    states = [(1.0, "lb[w7]", "node1", "master2", "up", "down", "earlier, other backend"),
              (2.4, "lb[w8]", "node1", "master1", "up", "down", "refused"),
              (2.3, "lb[w7]", "node1", "master1", "up", "down", "refused"),
              (2.1, "lb", "node9", "master1", "up", "down", "another balancer")]
    assert trial_metrics(_trial(states=states))["detect_s"] == pytest.approx(0.3)


def test_failover_is_the_worst_client_and_zero_for_clients_that_never_failed() -> None:
    s, lg = "node1/short", "node1/long-0"
    reqs = [(s, "node1", 1.0, 1.01, "ok", "master1", "short"),
            (s, "node1", 2.05, 2.06, "reset", "", "short"),
            (s, "node1", 2.10, 2.11, "ok", "master2", "short"),
            (lg, "node1", 1.5, 1.51, "ok", "master1", "long"),
            (lg, "node1", 2.5, 4.0, "timeout", "", "long"),
            (lg, "node1", 4.5, 4.52, "ok", "master2", "long")]
    m = trial_metrics(_trial(requests=reqs))
    assert m["failover_short_s"] == pytest.approx(0.11)
    assert m["failover_long_s"] == pytest.approx(2.52)
    assert m["failover_s"] == pytest.approx(2.52)
    assert m["failed_requests"] == 2 and m["delayed_requests"] == 0
    assert m["request_s"] == pytest.approx(0.01)
    assert math.isnan(m["recover_s"])


def test_check_rate_counts_intervals_on_backends_no_fault_hit() -> None:
    assert check_rate([0.0, 1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert check_rate([]) == 0.0 and math.isnan(check_rate([5.0]))
    m = trial_metrics(_trial(check_times={"master1": [0.0, 0.1], "master2": [0.5, 2.5, 4.5]}))
    assert m["check_rate_per_s"] == pytest.approx(0.5)


def test_recovery_is_the_first_answer_of_the_healed_backend() -> None:
    f = FaultRecord(0, "crash", "master1", 2.0, 6.0, frozenset({"master1"}),
                    frozenset({("master1", "apiserver")}))
    reqs = [("node1/short", "node1", 5.0, 5.01, "ok", "master2", "short"),
            ("node1/short", "node1", 7.0, 7.02, "ok", "master1", "short")]
    assert trial_metrics(_trial(faults=[f], requests=reqs))["recover_s"] == pytest.approx(1.02)

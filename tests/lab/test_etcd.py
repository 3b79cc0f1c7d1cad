"""The lab's etcd cell: a real etcd 3.4 (Debian's etcd-server, installed by `make test`)
against the simulator's elections.

Acceptance (issue 21): the simulated median within 15 % (or 0.3 s) of the real one, and
with 20 or more real trials a two-sample KS test p > 0.01. A real trial kills the leader
of a three-member cluster on loopback; every process and data directory it starts is
gone afterwards, even when a trial fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scipy import stats

from hasim.lab import etcd as lab_etcd


def _etcd_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-a", "-x", "etcd"], capture_output=True, text=True)
    return out.stdout.split("\n") if out.stdout.strip() else []


def _dirs() -> list[str]:
    shm = Path("/dev/shm")
    return sorted(p.name for p in shm.glob("hasim-etcd-*")) if shm.is_dir() else []


@pytest.fixture(autouse=True)
def _needs_etcd() -> None:
    assert shutil.which("etcd"), "etcd is installed by `make test` (make system-deps)"


def test_election_after_leader_kill_agrees_with_the_model(keep_chain) -> None:
    before = (_etcd_processes(), _dirs())
    df = lab_etcd.cell("etcd-defaults", trials=20, sim_trials_n=200)
    keep_chain("etcd", df)
    verdict = lab_etcd.judge(df)
    real = df[(df["source"] == "real") & (df["metric"] == "election_s")]["value"]
    # Raft's bound (docs/model.md, etcd): no survivor times out before E/H of its ticks,
    # the first within H of the last heartbeat, which came at most H before the kill.
    # (There is no upper bound: an election may take more than one term.)
    assert real.min() > 1.0 - 2 * 0.1 - 0.05
    # Second terms: H/E of the elections by the tick rules (members started at unrelated
    # tick phases); 20 trials bound the count from above only.
    k, n = lab_etcd.second_terms(df[df["source"] == "real"])["real"]
    assert k <= stats.binom.ppf(0.9995, n, 0.1 / 1.0), (k, n)
    # Trials taken under contention are left out of the verdict, and counted.
    left_out = 0 if verdict["all_contended"] else verdict["contended"]
    assert verdict["real_n"] + left_out == 20 and verdict["agrees"], verdict
    assert (_etcd_processes(), _dirs()) == before


def test_a_stopped_leader_hands_over_without_an_election(keep_chain) -> None:
    # docs/model.md (etcd): SIGTERM makes etcd transfer its leadership before it exits
    # (EtcdServer.Stop: TransferLeadership, then HardStop), so a follower leads within a few
    # round trips, not after an election timeout (E = 1 s here), in the next term.
    before = (_etcd_processes(), _dirs())
    df = lab_etcd.cell("etcd-defaults", trials=5, sim_trials_n=20, stop=True)
    keep_chain("etcd", df)
    real = df[(df["source"] == "real") & (df["metric"] == "election_s")]["value"]
    assert real.max() < 0.5 * 1.0, real.tolist()
    rounds = df[(df["source"] == "real") & (df["metric"] == "rounds")]["value"]
    assert (rounds == 1).all()
    verdict = lab_etcd.judge(df)
    assert verdict["agrees"], verdict
    assert (_etcd_processes(), _dirs()) == before


def test_a_failing_trial_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    before = (_etcd_processes(), _dirs())

    def boom(*_a: object, **_k: object) -> object:
        raise RuntimeError("injected")

    monkeypatch.setattr(lab_etcd, "_leader", boom)
    with pytest.raises(RuntimeError, match="injected"):
        lab_etcd.real_trial(100, 1000)
    assert (_etcd_processes(), _dirs()) == before


def test_cli_rejects_an_unknown_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_etcd.main(["--settings", "etcd-2030"]) == 2
    err = capsys.readouterr().err
    assert "unknown 'etcd-2030'" in err and "etcd-defaults" in err


def test_contention_is_measured_and_flags_a_busy_machine() -> None:
    import time

    from hasim.lab.contention import MAX_LOAD_PER_CPU, Contention, Watch

    with Watch() as w:  # 0.2 s of CPU of our own: /proc/stat counts in 10 ms ticks
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.2:
            sum(i * i for i in range(10_000))
    c = w.result
    assert 0.0 <= c.steal_share <= 1.0 and 0.0 < c.busy_share <= 1.0
    cpus = os.cpu_count() or 1
    assert Contention(MAX_LOAD_PER_CPU * cpus + 0.1, 0.0, 0.5).contended
    assert Contention(0.1, 0.2, 0.5).contended  # a fifth of the CPU stolen
    assert not Contention(0.1, 0.0, 0.5).contended


def test_judge_leaves_contended_trials_out() -> None:
    import pandas as pd

    rows = [{"source": "real", "trial": i, "metric": "election_s", "value": 1.2}
            for i in range(3)]
    rows += [{"source": "real", "trial": i, "metric": "contended", "value": float(i == 2)}
             for i in range(3)]
    rows[2]["value"] = 50.0  # the contended trial's timing is off
    rows += [{"source": "sim", "trial": i, "metric": "election_s", "value": 1.2}
             for i in range(10)]
    j = lab_etcd.judge(pd.DataFrame(rows))
    assert j["contended"] == 1 and j["real_n"] == 2 and j["agrees"]


@pytest.mark.parametrize("client_timeout", [15.0, 1.0])
def test_writes_through_the_leaders_death_hang_as_etcd_documents(client_timeout: float) -> None:
    # docs/model.md (etcd): a write proposed while the leader is gone is forwarded to the
    # dead leader and waits until etcd's request timeout, 5 s + 2E ("request timed out,
    # possibly due to previous leader failure"), or the client's own, whichever is first.
    # This checks the lab's instrument against that fact; the model's side of the cell
    # is in docs/lab.md.
    before = (_etcd_processes(), _dirs())
    r = lab_etcd.write_trial(100, 1000, client_timeout)
    request_timeout = 5.0 + 2 * 1.0
    hang = min(request_timeout, client_timeout)
    # Proposed during the election: it hangs, and fails.
    assert r["probe_ok"] == 0.0
    assert r["probe_s"] == pytest.approx(hang, abs=0.3)
    assert r["server_timeout"] == float(client_timeout > request_timeout)
    # In flight at the death: lost (it hangs as well), or already on a survivor's log and
    # committed by the new leader at the election's end: that election, measured in the
    # same trial, may have taken a second term (CheckQuorum's lease, docs/model.md).
    # (no earlier than E - H after the last heartbeat, itself at most H before the kill)
    assert 1.0 - 2 * 0.1 - 0.05 <= r["election_s"] < 3 * 1.0 + 0.5
    if r["in_flight_ok"]:
        assert r["in_flight_s"] < r["election_s"] + 0.5
    else:
        assert r["in_flight_s"] == pytest.approx(hang, abs=0.3)
    assert (_etcd_processes(), _dirs()) == before


@pytest.mark.parametrize("client_timeout", [1.0, 15.0])
def test_write_cell_agrees_with_the_model(client_timeout: float, keep_chain) -> None:
    df = lab_etcd.write_cell("etcd-defaults", client_timeout, trials=3, sim_trials_n=100)
    keep_chain("etcd", df)
    verdict = lab_etcd.judge(df, "probe_s")
    assert verdict["real_n"] + (0 if verdict["all_contended"] else verdict["contended"]) == 3
    assert verdict["agrees"], verdict


def test_calibrate_runs_every_cell_of_its_matrix(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    calls: list[tuple[str, object]] = []

    def fake(*metrics: str) -> pd.DataFrame:
        return pd.DataFrame([{"cell": "c", "source": src, "trial": 0, "metric": m,
                              "value": 1.0} for src in ("real", "sim") for m in metrics])

    monkeypatch.setattr(lab_etcd, "cell", lambda n, t, **k: calls.append(
        ("s" if k.get("stop") else "e", n)) or fake("election_s"))
    monkeypatch.setattr(lab_etcd, "write_cell", lambda n, to, t, **k: calls.append(("w", to))
                        or fake("probe_s", "writes_back_s"))
    df = lab_etcd.calibrate(tmp_path, trials=1, matrix="full")
    assert calls == [("e", "etcd-defaults"), ("s", "etcd-defaults"), ("w", 1.0), ("w", 15.0),
                     ("e", "kubespray-2026"), ("s", "kubespray-2026"), ("w", 15.0),
                     ("e", "kubespray-2016"), ("s", "kubespray-2016")]
    assert (tmp_path / "lab-etcd.parquet").exists() and len(df) == 6 * 2 + 3 * 4
    # Per write cell two verdicts: the write proposed during the election, writes back.
    assert capsys.readouterr().out.count(": agrees") == 6 + 3 * 2

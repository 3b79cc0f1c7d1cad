"""The lab's client-go cells: Go's real HTTP/2 client (x/net/http2 with client-go's
``ReadIdleTimeout`` / ``PingTimeout``) holding a watch through the real nginx or HAProxy
to Go stub apiservers, the watch's master blackholed; against the simulator's client-go.

Expected values come from the health check's rule (x/net/http2 ``healthCheck``: a ping
``ReadIdleTimeout`` after the last frame read, the connection closed ``PingTimeout``
later without an answer) and nginx's own peer choice (a fresh worker's smooth weighted
round robin picks the first server), not from earlier runs.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from hasim.lab import clientgo
from hasim.lab.judge import judge
from hasim.lab.netns import PREFIX, list_namespaces

WATCH = clientgo.CELLS["nginx-watch"]


def _lab_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "stat=,comm="], capture_output=True, text=True)
    rows = [line.split(None, 1) for line in out.stdout.splitlines() if line.strip()]
    return [comm for stat, comm in rows
            if comm in ("clientgo", "nginx", "haproxy") and not stat.startswith("Z")]


# --- the simulated side, against the health check's rule ----------------------------------------
def test_sim_gives_up_a_blackholed_watch_after_read_idle_plus_ping():
    # The fault comes at a uniform phase of the ping cycle: the last frame read is U(0,
    # ReadIdle) before it, so the loss is U(Ping, ReadIdle + Ping] after it (mean 2 s).
    lost = np.array([clientgo.sim_trial(WATCH, s)["lost_s"] for s in range(200)])
    assert lost.min() >= WATCH.ping - 1e-6
    assert lost.max() <= WATCH.read_idle + WATCH.ping + 0.01
    assert abs(lost.mean() - (WATCH.ping + WATCH.read_idle / 2)) < 0.15


def test_sim_beats_keep_the_connection_read_so_the_loss_comes_later():
    # A request every b = 0.5 s is answered, so the last read is at most b before the fault:
    # the loss is in (ReadIdle + Ping - b, ReadIdle + Ping].
    beats = clientgo.CELLS["nginx-beats"]
    lost = np.array([clientgo.sim_trial(beats, s)["lost_s"] for s in range(50)])
    top = beats.read_idle + beats.ping
    assert lost.min() >= top - beats.beat - 0.01
    assert lost.max() <= top + 0.01


@pytest.mark.parametrize("share,expected", [(0.0, 0.0), (1.0, 1.0)])
def test_a_redial_into_the_other_nginx_worker_meets_the_dead_master_first(share, expected):
    # Worker 0 took the watch to master1 (its smooth round robin's first pick); the
    # redial after the ping timeout goes to worker 0's next pick, master2, at once, or,
    # when the kernel hands it to the fresh worker 1, to master1 again first: one
    # proxy_connect_timeout (1 s) before master2.
    over = {"balancers.local.redial_other_worker": share}
    re = [clientgo.sim_trial(WATCH, s, over)["rewatch_s"] for s in range(5)]
    assert all(abs(r - expected) < 0.05 for r in re), re


def test_haproxy_redials_are_not_raced():
    re = [clientgo.sim_trial(clientgo.CELLS["haproxy-watch"], s)["rewatch_s"] for s in range(5)]
    assert max(re) < 0.05


# --- the real programs ---------------------------------------------------------------------------
@pytest.fixture()
def _clean_lab():
    assert clientgo.available() is None, clientgo.available()
    before = (_lab_processes(), [n for n in list_namespaces() if n.startswith(PREFIX)])
    yield
    after = (_lab_processes(), [n for n in list_namespaces() if n.startswith(PREFIX)])
    assert after == before, "a client-go cell left processes or namespaces behind"


@pytest.mark.needs_lab
@pytest.mark.usefixtures("_clean_lab")
@pytest.mark.parametrize("name", ["nginx-watch", "haproxy-watch"])
def test_real_client_go_gives_up_and_comes_back_as_the_model_says(name, keep_chain):
    cell = clientgo.CELLS[name]
    df = clientgo.cell_frame(cell, trials=4, sim_trials_n=100)
    keep_chain("clientgo", df)
    real = df[df["source"] == "real"].pivot(index="trial", columns="metric", values="value")
    # The real stack follows the health check's rule (plus scheduling, a few ms) ...
    assert (real["lost_s"] >= cell.ping - 0.05).all(), real["lost_s"]
    assert (real["lost_s"] <= cell.read_idle + cell.ping + 0.1).all(), real["lost_s"]
    # ... and so does the model, trial by trial: the simulator at each real trial's phase
    # (its fault came fault_after_open_s after the watch opened; the simulator's watch
    # opens at once) gives up within the lab's tolerance of the real client.
    for t, r in real.iterrows():
        sim = clientgo.sim_trial(cell, int(t), phase=float(r["fault_after_open_s"]) - 1.0)
        assert abs(sim["lost_s"] - r["lost_s"]) <= max(0.15 * r["lost_s"], 0.3), (t, sim, r)
    # ALPN through the TCP proxy: the watch is HTTP/2 end to end (real_trial checks the
    # protocol), and the redial lands on a live master.
    assert (real["same_backend"] == 0).all()
    verdict = judge(df, "lost_s")
    assert verdict["real_n"] + (0 if verdict["all_contended"] else verdict["contended"]) == 4
    assert verdict["agrees"], verdict
    # The new watch: each real trial has one of the model's two outcomes. At once (the
    # redial goes to a live master), or, behind nginx only, one proxy_connect_timeout
    # later, when the redial was accepted by the other worker and tried the dead master
    # first; nginx's error log then holds the "upstream timed out ... while connecting"
    # line. (Their share, balancers.local.redial_other_worker, is judged on the 20-trial
    # cells of `make calibrate`: 4 trials cannot place a median of a two-valued mix.)
    local = cell.scenario().spec.balancers.local
    for t, r in real.iterrows():
        raced = cell.lb == "nginx" and r["connect_timeouts"] >= 1
        connect = local.proxy_connect_timeout if raced else 0.0
        assert abs(r["rewatch_s"] - connect) < 0.3, (t, r["rewatch_s"], r["connect_timeouts"])


@pytest.mark.needs_lab
@pytest.mark.usefixtures("_clean_lab")
def test_a_failing_trial_still_removes_its_processes_and_namespace(monkeypatch):
    # An exception half-way, with the stubs, the LB and the client running and the watch
    # open: the trial fails with it and leaves nothing behind (the fixture checks).
    from hasim.lab.netns import Namespace

    def broken(self, addr):
        raise RuntimeError(f"injected: no blackhole of {addr}")

    monkeypatch.setattr(Namespace, "blackhole", broken)
    with pytest.raises(RuntimeError, match="injected"):
        clientgo.real_trial(WATCH, 0.5)


def test_the_go_program_builds_and_speaks_json():
    assert shutil.which("go"), "Go is installed by `make test` (system-deps)"
    exe = clientgo.binary()
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr

"""Nothing a lab run creates outlives it: processes (stubs, nginx and its workers,
HAProxy, load clients), the namespace (``ip netns list``) and its iptables rules, after
a normal run, a run that fails mid-trial, and a ``python -m hasim.lab`` interrupted by
SIGINT or SIGTERM.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hasim.lab import faults, netns
from hasim.lab.lab import measure_scenario
from hasim.lab.matrix import NGINX_SHORT, lab_scenario

pytestmark = pytest.mark.needs_lab


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _host_rules() -> str:
    return subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout


def assert_gone(name: str, inode: int | None, pids: list[int]) -> None:
    assert name not in netns.list_namespaces()
    if inode is not None:
        assert netns.processes_in(inode) == [], "a process still runs in the lab namespace"
    assert [p for p in pids if _alive(p)] == []
    # The blackhole rules lived in the namespace only; the host's rules never had them.
    assert "127.0.1." not in _host_rules()


def test_a_normal_run_leaves_nothing(quick_matrix: tuple[Path, pd.DataFrame]) -> None:
    assert netns.HISTORY, "the matrix created no namespace"
    for ns in netns.HISTORY:
        assert ns.deleted
        assert_gone(ns.name, ns.inode, [p.pid for p in ns.procs])


def test_a_run_that_fails_mid_trial_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    apply = faults.FaultActions.apply

    def apply_then_fail(self: faults.FaultActions, f: faults.LabFault) -> float:
        apply(self, f)
        seen["ns"] = self.ns
        seen["rules"] = self.ns.rules()
        seen["pids"] = netns.ns_pids(self.ns.name)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(faults.FaultActions, "apply", apply_then_fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        measure_scenario(lab_scenario(NGINX_SHORT, "blackhole"), trials=1, sim_trials=0)
    ns = seen["ns"]
    assert isinstance(ns, netns.Namespace)
    # At the failure the blackhole was in place and the processes ran.
    assert any("-j DROP" in r for r in seen["rules"])  # type: ignore[union-attr]
    pids = seen["pids"]
    assert isinstance(pids, list) and len(pids) >= 5  # 3 stubs, nginx master, load clients
    assert_gone(ns.name, ns.inode, pids)


def _read_until(p: subprocess.Popen[bytes], needle: str, timeout: float) -> list[str]:
    """stderr lines of ``p`` up to the one containing ``needle``."""
    assert p.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stderr], [], [], 0.2)
        if not ready:
            if p.poll() is not None:
                break
            continue
        chunk = os.read(p.stderr.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(line.decode())
            if needle in lines[-1]:
                return lines
    raise AssertionError(f"never saw {needle!r}; stderr: {lines}")


def _foreground_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM at their defaults and unblocked."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_lab_process_leaves_nothing(tmp_path: Path, sig: int) -> None:
    scenario = lab_scenario(NGINX_SHORT, "blackhole")
    path = tmp_path / "lab-nginx-blackhole.yaml"
    path.write_text(yaml.safe_dump(dict(scenario.raw)))
    # Run as a user's foreground command would: a shell starts background jobs (a CI
    # runner's `cmd &`) with SIGINT ignored, children inherit that, and Python then never
    # installs its KeyboardInterrupt handler, so Ctrl-C would not be what is tested.
    p = subprocess.Popen([sys.executable, "-m", "hasim.lab", str(path), "--trials", "2",
                          "--sim-trials", "1", "--out", str(tmp_path / "out")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=_foreground_signals)
    try:
        lines = _read_until(p, "namespace hasim-lab-", 60)
        name = lines[-1].split()[-1]
        inode = os.stat(netns.NETNS_DIR / name).st_ino
        # Mid-trial: the fault (an iptables DROP) is in place and everything runs.
        _read_until(p, "partition kube-master[0] at", 60)
        pids = netns.ns_pids(name)
        rules = subprocess.run(["ip", "netns", "exec", name, "iptables", "-w", "-S"],
                               capture_output=True, text=True).stdout
        assert "-j DROP" in rules and len(pids) >= 5
        p.send_signal(sig)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM)
    assert_gone(name, inode, pids)
    assert not (tmp_path / "out" / "lab.parquet").exists()

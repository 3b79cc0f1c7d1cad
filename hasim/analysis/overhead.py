"""The load that health checks and reconnections put on the apiservers.

- :func:`steady_rates`: checks and new connections per apiserver per second in the steady
  state. A run's ``health_checks`` table counts from time 0, where every client opens its
  connection and each HAProxy's first checks are spread over one interval; two runs of one
  scenario that differ only in ``duration`` share their history (same seed), so the
  difference of their counts over the difference of their durations is the rate of the
  window between them, start-up excluded.
- :func:`expected_check_rate`: docs/model.md, closed forms, active checks per apiserver per second =
  checking LB instances / (``inter`` + d), d the duration of a passing check.
- :func:`tls_handshake_cost`: the server-side CPU time of one full TLS handshake on this
  machine (an RSA-2048 signature and an X25519 key exchange, through OpenSSL), the part of
  a check or a new connection that costs the apiserver most.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from hasim.batches.summarize import sweep_columns
from hasim.graph.topology import build_topology
from hasim.spec.scenario import Scenario

#: Kinds of the ``health_checks`` table that are checks (the rest: ``connection``).
CHECK_KINDS = ("active", "passive")


def _without(point: str, key: str) -> str:
    """A sweep point's label without the entry of ``key`` (labels use the last part)."""
    short = key.rsplit(".", 1)[-1]
    parts = [p for p in str(point).split(",") if p.split("=", 1)[0] != short]
    return ",".join(parts) or "base"


def sweep_keys(runs: pd.DataFrame) -> list[str]:
    """The sweep keys of a batch's runs: the columns between ``point`` and
    ``replication``, and the dotted keys that a later scenario of the batch added after
    the summary columns."""
    keys = list(sweep_columns(runs))
    keys += [c for c in runs.columns if "." in str(c) and c not in keys]
    return keys


def steady_rates(results: Any, duration_key: str = "duration") -> pd.DataFrame:
    """Per scenario, sweep point (less ``duration_key``) and replication: the rates of
    the window between its shortest and its longest run.

    Columns: ``scenario``, ``point`` (without the duration), the other sweep keys,
    ``replication``, ``window_s``, ``apiservers``, ``checkers`` (LB instances that sent
    active checks in the window), ``checks_per_apiserver_s`` (active and passive checks,
    the mean over apiservers), ``checks_max_per_apiserver_s``, ``passive_per_apiserver_s``,
    ``connections_per_apiserver_s`` (new proxied connections, each a TLS handshake).
    Needs ``duration_key`` among the sweep keys with at least two values.
    """
    runs = results.runs
    if duration_key not in runs.columns:
        raise ValueError(f"{duration_key!r} is not a sweep key of this batch")
    ok = runs[runs["status"] == "ok"].copy()
    ok["_point"] = [_without(p, duration_key) for p in ok["point"]]
    keys = [c for c in sweep_keys(runs) if c != duration_key]
    hc = results["health_checks"]
    hc = hc[hc["target"].astype(str).str.endswith("/apiserver")] if "target" in hc else hc
    rows = []
    for (scenario, point, rep), group in ok.groupby(["scenario", "_point", "replication"],
                                                    sort=False):
        group = group.sort_values("duration_s")
        if len(group) < 2:
            continue
        short, long_ = group.iloc[0], group.iloc[-1]
        window = float(long_["duration_s"]) - float(short["duration_s"])
        if window <= 0:
            continue
        a = hc[hc["run_id"] == short["run_id"]].set_index(["source", "target", "kind"])["count"]
        b = hc[hc["run_id"] == long_["run_id"]].set_index(["source", "target", "kind"])["count"]
        diff = b.sub(a, fill_value=0).reset_index()
        apis = int(long_.get("apiservers", 0) or 0) or max(diff["target"].nunique(), 1)
        per_target = diff.pivot_table(index="target", columns="kind", values="count",
                                      aggfunc="sum", fill_value=0)
        for kind in (*CHECK_KINDS, "connection"):
            if kind not in per_target:
                per_target[kind] = 0.0
        checks = per_target["active"] + per_target["passive"]
        active = diff[(diff["kind"] == "active") & (diff["count"] > 0)]
        row: dict[str, Any] = {"scenario": scenario, "point": point}
        row.update({k: long_[k] for k in keys})
        row.update({
            "replication": rep,
            "window_s": window,
            "apiservers": apis,
            "checkers": int(active["source"].nunique()),
            "checks_per_apiserver_s": float(checks.sum()) / apis / window,
            "checks_max_per_apiserver_s": float(checks.max()) / window if len(checks) else 0.0,
            "passive_per_apiserver_s": float(per_target["passive"].sum()) / apis / window,
            "connections_per_apiserver_s": float(per_target["connection"].sum()) / apis / window,
        })
        rows.append(row)
    return pd.DataFrame(rows)


def expected_check_rate(scenario: Scenario) -> float:
    """Active checks per apiserver per second, docs/model.md, closed forms: the HAProxy instances
    that
    check each apiserver / (``inter`` + d). 0 for nginx (no active checks) and for an
    HAProxy whose servers have no ``check``."""

    g = build_topology(scenario)
    spec = scenario.spec.balancers
    rate = 0.0
    for _, d in g.nodes(data=True):
        comp = d["component"]
        lb: Any
        if comp == "lb" and d.get("kind") == "haproxy":
            lb = spec.local_haproxy()
        elif comp == "external-lb" and not d.get("virtual"):
            lb = spec.external_haproxy()
        else:
            continue
        if not lb.check:
            continue
        d_ok = (4 if lb.check_type == "httpchk" else 3) * scenario.spec.network.rtt
        rate += 1.0 / (lb.inter + d_ok)
    return rate


def tls_handshake_cost(seconds: float = 0.5) -> dict[str, float]:
    """Server-side CPU seconds of one full TLS handshake, measured here: one RSA-2048
    signature (kubespray's and kubeadm's apiserver certificates are RSA-2048) plus one
    X25519 key generation and exchange, through OpenSSL (``cryptography``). The apiserver
    does them with Go's crypto, and a handshake has other work besides (the certificate
    chain, the record layer, the request itself): an estimate of the dominant part, not
    the apiserver's exact cost.

    Returns ``rsa_sign_s``, ``ecdhe_s`` and ``handshake_s`` (their sum), each the median
    of a few batches of process CPU time.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    msg = b"\0" * 64
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    peer = x25519.X25519PrivateKey.generate().public_key()

    def sign() -> None:
        key.sign(msg, pss, hashes.SHA256())

    def ecdhe() -> None:
        x25519.X25519PrivateKey.generate().exchange(peer)

    rsa_s = _cpu_per_call(sign, seconds / 2)
    ecdhe_s = _cpu_per_call(ecdhe, seconds / 2)
    return {"rsa_sign_s": rsa_s, "ecdhe_s": ecdhe_s, "handshake_s": rsa_s + ecdhe_s}


def _cpu_per_call(fn: Any, budget: float, batches: int = 5) -> float:
    fn()  # warm up
    per: list[float] = []
    n = 1
    t0 = time.process_time()
    while time.process_time() - t0 < budget / batches:
        fn()
        n += 1
    batch = max(n, 5)
    for _ in range(batches):
        c0 = time.process_time()
        for _ in range(batch):
            fn()
        per.append((time.process_time() - c0) / batch)
    return float(np.median(per))

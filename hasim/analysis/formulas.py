"""Closed forms of docs/model.md that notebooks draw next to the simulated values.

Each function reads the knobs of a scenario's resolved spec and returns the window or
rate docs/model.md gives for it; none runs the simulator.
"""

from __future__ import annotations

from typing import Any


def haproxy_check_duration(spec: Any, rtt: float, blackholed: bool) -> float:
    """d, the duration of one failing check (docs/model.md, HAProxy): one round trip when the
    server refuses; for a blackholed one ``inter`` when ``timeout check`` is unset, else
    min(``timeout connect``, ``inter``)."""
    if not blackholed:
        return rtt
    if spec.timeout_check and spec.timeout_connect:
        return float(min(spec.timeout_connect, spec.inter))
    return float(spec.inter)


def haproxy_detection_window(spec: Any, rtt: float, blackholed: bool) -> tuple[float, float]:
    """(earliest, latest) time from a server's death to HAProxy marking it down, from full
    health (docs/model.md, HAProxy): ``U(0, inter) + fall*d + (fall-1)*fastinter``."""
    d = haproxy_check_duration(spec, rtt, blackholed)
    fi = spec.fastinter or spec.inter
    base = spec.fall * d + (spec.fall - 1) * fi
    return float(base), float(base + spec.inter)


def keepalived_takeover_window(advert_int: float, priority: int) -> tuple[float, float]:
    """(earliest, latest) time from the VRRP master's crash to the backup taking the VIP
    (docs/model.md, the VIP): ``3A + skew - U(0, A)``, skew = (256 - priority) / 256."""
    skew = (256 - priority) / 256
    return 2 * advert_int + skew, 3 * advert_int + skew


def kube_vip_takeover_window(lease: float, retry: float) -> tuple[float, float]:
    """(earliest, latest) kube-vip takeover after the holder stops renewing: client-go
    leader election with jitter factor 1.2 puts it in (L - R, L + 4.4 R)."""
    return lease - retry, lease + 4.4 * retry

"""The endpoint rule sets that ship with hasim, one module each (docs/model.md, "Endpoint
rules"): ``ha_mode_2016`` (the HA doc's table), ``kargo_2016_10`` (kubespray's code of the
doc's day) and ``kubespray_2026_01`` (today). Each builds a
:class:`~hasim.kubespray.endpoints.RuleSet` and registers it; :mod:`hasim.kubespray.endpoints`
imports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hasim.kubespray.endpoints import HostView


def hosts_spelled_without(views: Sequence[HostView], spellings: Iterable[str]) -> list[str]:
    """Inventory hosts of the cluster (masters and nodes) none of whose groups is spelled
    as one of ``spellings``: the hosts a kubespray that knows only those names skips.
    Inline and generated hosts (no spellings recorded) are never listed."""
    known = set(spellings)
    return [v.host.name for v in views
            if v.in_k8s and v.host.spelled_groups and not v.host.spelled_groups & known]


def name_list(names: Sequence[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"

"""``report.html`` of an assessment: one self-contained page (figures embedded as PNG, no
script, no network) for someone who has not read hasim's docs."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hasim.assessment import figures

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1b1f24;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{background:#eef7ee;border:1px solid #9c9;padding:.8em 1em;border-radius:6px}
.warn{background:#fff7e6;border:1px solid #e5c07b;padding:.5em 1em;border-radius:6px}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
img{max-width:100%}.bad{background:#f8d7da}.mid{background:#fff3cd}.good{background:#d4edda}
small{color:#555}
"""


def _png(fig: Any, a: Any = None, name: str | None = None) -> str:
    """The figure as a data: URI; also ``a.out/NAME.png`` when given (for docs, slides)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    if a is not None and name:
        (a.out / f"{name}.png").write_bytes(buf.getvalue())
        a.files[f"{name}.png"] = str(a.out / f"{name}.png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _e(x: Any) -> str:
    return html.escape(str(x))


def _iv(iv: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not iv or iv.get("mean") is None:
        return "-"
    m = iv["mean"]
    lo, hi = iv.get("ci") or [None, None]
    if lo is None or hi is None or lo == hi:
        return f"{m:.{digits}g}"
    return f"{m:.{digits}g} <small>[{lo:.{digits}g}, {hi:.{digits}g}]</small>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           classes: Sequence[Sequence[str]] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for i, r in enumerate(rows):
        cls = classes[i] if classes else [""] * len(r)
        out.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in zip(r, cls,
                                                                                strict=True))
                   + "</tr>")
    return "\n".join(out + ["</table>"])


def _severity(cell: Mapping[str, Any]) -> str:
    never = (cell["never_recovered"] or {}).get("mean") or 0
    nr = (cell["not_ready_nodes"] or {}).get("mean") or 0
    lost = (cell["client_time_lost_s"] or {}).get("mean") or 0
    if never > 0 or nr > 0:
        return "bad"
    return "mid" if lost > 1 else "good"


def _ecdf_figure(a: Any) -> str | None:
    fig = figures.failover_ecdf(a)
    return None if fig is None else _png(fig, a, "failover-ecdf")


def _load_figure(a: Any) -> str | None:
    fig = figures.check_load(a)
    return None if fig is None else _png(fig, a, "check-load")


def _pareto_figure(a: Any) -> str | None:
    fig = figures.tuning_front(a)
    return None if fig is None else _png(fig, a, "tuning-front")


def render_html(a: Any) -> str:
    """The whole page."""
    rec = a.recommendation
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>hasim assessment: {_e(a.cluster['source'])}</title><style>{CSS}</style>"
             "</head><body>",
             f"<h1>What happens to {_e(a.cluster['source'])} when a master or an LB fails?</h1>",
             f"<p>hasim simulated this cluster under every access layout kubespray offers "
             f"({_e(a.cluster['rules'])} rules), each facing the same faults, "
             f"{_e(_reps(a))} replications each. Figures are means with 95&nbsp;% intervals "
             "in brackets.</p>"]
    parts.append(f"<div class='verdict'><b>Recommendation: {_e(rec['layout'])}</b>. "
                 f"{_e(rec['why'])}.<br>Current layout: <b>{_e(a.current)}</b>."
                 f" The change: paste <code>recommended-vars.yml</code> into "
                 f"<code>{_e(rec['file'])}</code>.</div>")
    if a.warnings:
        parts.append("<div class='warn'><b>Worth knowing</b><ul>"
                     + "".join(f"<li>{_e(w)}</li>" for w in a.warnings) + "</ul></div>")
    parts.append(_cluster_section(a))
    parts.append(_endpoints_section(a))
    parts.append(_matrix_section(a))
    for title, img, text in (
        ("Failover of node clients", _ecdf_figure(a),
         "Each line is a layout: the share of worker-node clients (kubelet, kube-proxy) "
         "working again t seconds after a master fault, pooled over the master faults. A "
         "line that stays below 1 is clients that never came back within the run."),
        ("Check load on the apiservers", _load_figure(a),
         "Active health checks (HAProxy) and passive re-probes (nginx), and new proxied "
         "connections, each a TLS handshake for the apiserver."),
    ):
        if img:
            parts.append(f"<h2>{title}</h2><p>{text}</p><img alt='{title}' src='{img}'>")
    parts.append(_ranking_section(a))
    parts.append(_tuning_section(a))
    parts.append(_change_section(a))
    parts.append("<p><small>Written by hasim assess. The model and its sources: hasim's "
                 "docs/model.md; this report's method: docs/assess.md.</small></p>"
                 "</body></html>")
    return "\n".join(parts)


def _reps(a: Any) -> str:
    if a.damage is None or a.damage.empty:
        return "0"
    return str(int(a.damage["replications"].max()))


def _cluster_section(a: Any) -> str:
    c = a.cluster
    rows = [["source", _e(c["source"])], ["rule set", _e(c["rules"])],
            ["hosts", _e(c["hosts"])], ["control plane", _e(", ".join(c["control_plane"]))],
            ["etcd members", _e(", ".join(c["etcd"]))], ["worker nodes", _e(c["nodes"])],
            ["Kubernetes", f"{_e(c['kubernetes_version'])} (client profile "
                           f"{_e(c['client_profile'])})"]]
    if c.get("sampled_nodes"):
        rows.append(["sampling", f"{c['sampled_nodes']} nodes per class simulated in full"])
    knobs = [[_e(k["name"]), _e(k["value"]), _e(k["source"])] for k in a.knobs]
    return ("<h2>The cluster as it is</h2>" + _table(["", ""], rows)
            + "<p>The timers kubespray reads, and where each value came from:</p>"
            + _table(["variable", "value", "from"], knobs))


def _endpoints_section(a: Any) -> str:
    rows = []
    for h, e in list(a.endpoints.items())[:40]:
        lb = e.get("local_lb")
        rows.append([_e(h), _e(",".join(e["roles"])), _e(e["apiserver"] or "-"),
                     _e(", ".join(e["etcd"]) or "-"),
                     _e(f"{lb['kind']} on {','.join(lb['listen'])}" if lb else "-")])
    more = len(a.endpoints) - len(rows)
    cur: dict[str, Any] = next((lo for lo in a.layouts if lo["name"] == a.current),
                               {"spofs": []})
    spofs = ", ".join(cur["spofs"]) or "none"
    return ("<h2>Endpoints and single points of failure</h2>"
            "<p>Where each host's clients reach the apiserver and etcd today:</p>"
            + _table(["host", "roles", "apiserver", "etcd", "local LB"], rows)
            + (f"<p><small>and {more} more hosts</small></p>" if more > 0 else "")
            + f"<p>Single points of failure of the current layout ({_e(a.current)}): "
              f"<b>{_e(spofs)}</b>.</p>")


def _matrix_section(a: Any) -> str:
    d = a.damage
    if d is None or d.empty:
        return "<h2>Damage</h2><p>No run succeeded.</p>"
    faults = list(dict.fromkeys(d["fault"]))
    header = ["layout", *[_e(f) for f in faults]]
    rows, classes = [], []
    for layout, g in d.groupby("layout", sort=False):
        by = {r["fault"]: r for r in g.to_dict("records")}
        row, cls = [_e(layout)], [""]
        for f in faults:
            r = by.get(f)
            if r is None:
                row.append("<small>n/a</small>")
                cls.append("")
                continue
            row.append(f"never back {_iv(r['never_recovered'])}<br>NotReady "
                       f"{_iv(r['not_ready_nodes'])}<br>lost {_iv(r['client_time_lost_s'])} "
                       f"client-s<br>p95 {_iv(r['p95_failover_s'])} s")
            cls.append(_severity(r))
        rows.append(row)
        classes.append(cls)
    return ("<h2>Damage: every layout under every fault</h2><p>Per cell: clients that never "
            "came back, nodes that went NotReady although running, client-seconds without an "
            "apiserver, and the p95 failover of the clients cut off (those never back count "
            "with the whole window). Red: clients lost or nodes NotReady; yellow: a visible "
            "outage; green: under a client-second lost.</p>"
            + _table(header, rows, classes))


def _ranking_section(a: Any) -> str:
    r = a.ranking
    if r is None or r.empty:
        return ""
    rows = []
    for row in r.to_dict("records"):
        rows.append([_e(row["rank"]), _e(row["layout"]), _e(row["spofs"] or "none"),
                     *[_num_iv(row, f) for f in ("never_recovered", "not_ready_nodes",
                                                 "client_time_lost_s",
                                                 "checks_per_apiserver_s")]])
    return ("<h2>Ranking</h2><p>Damage first (clients never back, then NotReady nodes, then "
            "client time lost, summed over the faults), load second; layouts whose intervals "
            "overlap on every figure share a rank: they tie.</p>"
            + _table(["rank", "layout", "single points of failure", "never back",
                      "NotReady nodes", "client-s lost", "checks/apiserver/s"], rows))


def _num_iv(row: Mapping[str, Any], f: str) -> str:
    m, lo, hi = row[f], row[f"{f}_lo"], row[f"{f}_hi"]
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "-"
    if lo == hi:
        return f"{m:.3g}"
    return f"{m:.3g} <small>[{lo:.3g}, {hi:.3g}]</small>"


def _tuning_section(a: Any) -> str:
    t = a.tuning
    tune = a.recommendation.get("tuning") or {}
    if t is None or t.empty:
        return ""
    img = _pareto_figure(a)
    rows = []
    for row in t.to_dict("records"):
        rows.append([_e(row["label"]), f"{row['p95_failover_s']:.3g}",
                     f"{row['checks_per_apiserver_s']:.3g}", f"{row['not_ready_nodes']:.2g}",
                     f"{row['never_recovered']:.2g}",
                     "knee" if row["knee"] else ("front" if row["front"] else "")])
    return (f"<h2>Tuning {_e(a.recommendation['layout'])}</h2>"
            f"<p>Recommended setting: <b>{_e(tune.get('setting', '-'))}</b> (the knee of the "
            "Pareto front of p95 failover against checks per apiserver per second, among the "
            "settings that do no more damage than the best).</p>"
            + (f"<img alt='Pareto front' src='{img}'>" if img else "")
            + _table(["setting", "p95 failover (s)", "checks/apiserver/s", "NotReady nodes",
                      "never back", ""], rows))


def _change_section(a: Any) -> str:
    from hasim.assessment.assess import recommended_vars_yaml

    out = ["<h2>The change to make</h2>",
           f"<p>Paste into <code>{_e(a.recommendation['file'])}</code>:</p>",
           f"<pre>{_e(recommended_vars_yaml(a))}</pre>"]
    lo = next((x for x in a.layouts if x["name"] == a.recommendation["layout"]), None)
    if lo and lo.get("note"):
        out.append(f"<p>{_e(lo['note'])}.</p>")
    cfg = a.extras.get("config")
    if cfg:
        host, name, text = cfg
        out.append(f"<p>The {_e(name)} kubespray would write on {_e(host)}:</p>"
                   f"<pre>{_e(text)}</pre>")
    return "\n".join(out)


__all__ = ["render_html"]


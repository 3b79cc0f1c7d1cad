"""Standard figures from result tables (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def failover_ecdf(
    failovers: Mapping[str, pd.DataFrame], path: str | Path, title: str | None = None
) -> Path:
    """ECDF of failover latency per scenario (HA mode), over every (fault, client) pair.

    Clients that never failed count at 0 s; clients that never recovered sit beyond the
    right edge, so a curve that stops below 1 says "this many never got back".
    """
    fig, ax = plt.subplots(figsize=(8, 4.8))
    finite_max = 1.0
    for name, df in failovers.items():
        lat = df["latency_s"].to_numpy(dtype=float)
        if len(lat) == 0:
            continue
        xs = np.sort(lat)
        ys = np.arange(1, len(xs) + 1) / len(xs)
        finite = np.isfinite(xs)
        if finite.any():
            finite_max = max(finite_max, float(xs[finite].max()))
        never = int((~finite).sum())
        label = f"{name} ({never}/{len(xs)} never recovered)" if never else name
        ax.step(np.concatenate([[0.0], xs[finite]]), np.concatenate([[0.0], ys[finite]]),
                where="post", label=label)
    ax.set_xlim(0, finite_max * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("failover latency: fault to the client's first successful request again (s)")
    ax.set_ylabel("fraction of clients")
    ax.set_title(title or "How long are clients cut off after the fault?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

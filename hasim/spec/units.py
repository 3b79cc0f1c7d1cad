"""Durations with units, as scenario files and the modelled software write them."""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number (seconds) or a string such as ``"1m30s"``, ``"100ms"``.

    Compound strings (``"1h30m"``) are accepted, as in Go's ``time.ParseDuration`` that
    Kubernetes flags use. Raises ``ValueError`` with the accepted forms on anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 10s, 500ms, 5m; got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value:
            raise ValueError(f"a duration must be a non-negative number of seconds, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 10s, 500ms, 5m; got {value!r}")
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("expected a duration such as 10s, 500ms, 5m; got an empty string")
    try:
        return float(text) if float(text) >= 0 else _bad(value)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            _bad(value)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        _bad(value)
    return total


def _bad(value: object) -> float:
    raise ValueError(
        f"bad duration {value!r}: use a number with a unit (us, ms, s, m, h, d), e.g. 10s or 1m30s"
    )


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds`` (``"1m30s"``, ``"250ms"``), for labels and tables."""
    if seconds == float("inf"):
        return "inf"
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:g}ms"
    out, rest = [], seconds
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if rest >= size:
            n = int(rest // size)
            out.append(f"{n}{unit}")
            rest -= n * size
    if rest or not out:
        out.append(f"{rest:g}s")
    return "".join(out)

"""The request log (hasim/sim/records.py): records folded into chunks of columns as they
come give back exactly the records appended, in order, and the same requests table as
one made from the tuples themselves."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from hasim.sim.metrics import requests_table
from hasim.sim.records import FOLD, REQUEST_COLUMNS, WIDTH, Recorder, RequestLog


def _records(n: int) -> list[tuple[str, str, float, float, str, str, str]]:
    rng = np.random.default_rng(7)
    outcomes = ["ok", "timeout", "refused", "reset"]
    out = []
    for i in range(n):
        start = float(rng.uniform(0, 600))
        out.append((f"node{i % 13}/kubelet", f"node{i % 13}", start,
                    start + float(rng.exponential(0.01)), outcomes[i % 4],
                    f"master{i % 3 + 1}" if i % 5 else "", ("lease", "status", "etcd")[i % 3]))
    return out


@pytest.mark.parametrize("n", [0, 1, FOLD // WIDTH - 1, FOLD // WIDTH, 3 * FOLD // WIDTH + 5])
def test_the_log_gives_back_what_was_appended_in_order(n: int) -> None:
    rows = _records(n)
    log = RequestLog()
    # Half as the hot path adds them (fields onto `rows`, fold at FOLD items), half
    # through append: both end up in the same chunks.
    for k, row in enumerate(rows):
        if k % 2:
            log.append(row)
        else:
            log.rows += row
            if len(log.rows) >= FOLD:
                log.fold()
    assert len(log) == n
    assert list(log) == rows
    assert len(log) == n and list(log) == rows  # iterating again changes nothing


def test_the_table_is_the_one_made_from_the_tuples() -> None:
    rows = _records(2 * FOLD // WIDTH + 17)
    rec = Recorder()
    for row in rows:
        rec.request(*row)
    # The table as pandas makes it from the tuples, the text columns kept as objects.
    expected = pd.DataFrame(rows, columns=list(REQUEST_COLUMNS), dtype=object).astype(
        {"start": "float64", "end": "float64"})
    pd.testing.assert_frame_equal(requests_table(rec), expected)
    assert [str(t) for t in requests_table(rec).dtypes] == [
        "object", "object", "float64", "float64", "object", "object", "object"]


def test_an_empty_log_makes_an_empty_typed_table() -> None:
    df = requests_table(Recorder())
    assert list(df.columns) == list(REQUEST_COLUMNS) and len(df) == 0
    assert df["start"].dtype == np.float64 and df["client"].dtype == object


def test_folded_records_keep_no_float_objects() -> None:
    """The point of folding: a request's two times are kept as doubles, not as the float
    objects the run made (which the old list of tuples kept alive to the end)."""
    start, end = 1234.5678 * 3, 9876.5432 * 7  # fresh objects, not constants
    before = sys.getrefcount(start), sys.getrefcount(end)
    log = RequestLog()
    log.append(("a/kubelet", "a", start, end, "ok", "m1", "lease"))
    assert sys.getrefcount(start) > before[0]  # held while not yet folded
    log.fold()
    assert (sys.getrefcount(start), sys.getrefcount(end)) == before
    assert list(log) == [("a/kubelet", "a", start, end, "ok", "m1", "lease")]


def test_a_record_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="7 fields, not 6"):
        RequestLog().append(("a", "b", 1.0, 2.0, "ok", "m1"))  # type: ignore[arg-type]


def test_clear_empties_the_log() -> None:
    log = RequestLog(_records(FOLD // WIDTH + 3))
    rows = log.rows
    log.clear()
    assert len(log) == 0 and list(log) == []
    assert log.rows is rows  # the hot path holds this very list

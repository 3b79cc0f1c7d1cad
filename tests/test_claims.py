"""hasim.analysis.claims on a small fault matrix: the 2016 doc's claims judged. Expected
verdicts are the modelled software's own behaviour (docs/model.md): in the default mode
every non-master talks to the first master only, so its crash takes every worker NotReady
and another master's takes none (the doc's claim holds); the doc's example HAProxy lists
its servers without ``check``, so it never marks a dead master down (kubespray #5663): the
doc's "the external LB to use" does not hold."""

from __future__ import annotations

from pathlib import Path

import hasim
from hasim.analysis.claims import doc_claims
from hasim.analysis.compare import fault_matrix, impact, victims

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "default (no LB)": ROOT / "scenarios/modes/default-mode-crash.yaml",
    "external HAProxy, 2016 example": ROOT / "scenarios/modes/external-lb-2016.yaml",
    "external HAProxy, 2020 fix": ROOT / "scenarios/modes/external-lb-2020-fix.yaml",
}


def test_the_docs_claims_on_a_small_matrix(tmp_path: Path) -> None:
    matrix = fault_matrix({k: str(v) for k, v in MODES.items()}, kinds=["crash"], at="60s",
                          duration="3m")
    runs = hasim.run_batch(matrix.scenarios, out=tmp_path, reps=1, executor="process",
                           jobs=2, progress=False)
    assert (runs["status"] == "ok").all()
    results = hasim.load_results(tmp_path)
    cells = matrix.cells
    claims = doc_claims(results, cells, impact(results, cells), victims(results, cells),
                        matrix.scenarios[0].cluster)
    verdict = dict(zip(claims["the doc says"], claims["agree?"], strict=True))
    assert len(verdict) == 2  # the other claims need modes this matrix does not hold
    default = next(v for k, v in verdict.items() if k.startswith("By default"))
    example = next(v for k, v in verdict.items() if k.startswith("The example HAProxy"))
    assert default == "yes"
    assert example == "**no**"
    assert claims["the model finds"].str.contains("never marks a dead master down").any()

"""The CI chain's key metrics against stored values, with a tolerance (run after nbval re-executed it).

``make book-ci`` executes the chain at the ``ci`` profile into ``results/ci`` and stores its per-run test
metrics in ``expected_ci_metrics.csv``; ``make test`` re-executes those notebooks with nbval (in place),
then this test compares what they regenerated.  Floating-point summation order may differ between
machines, so a retrieval can move by a rank: the tolerance is one test image of i2t recall.
"""

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).with_name("expected_ci_metrics.csv")
REGENERATED = ROOT / "results" / "ci" / "tables" / "ablation_runs.csv"
KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


@pytest.fixture(scope="module")
def both():
    exp = pd.read_csv(EXPECTED).set_index(["variant", "seed"]).sort_index()
    got = pd.read_csv(REGENERATED).set_index(["variant", "seed"]).sort_index()
    return exp, got


def test_same_runs(both):
    exp, got = both
    assert list(got.index) == list(exp.index)


def test_recalls_within_tolerance(both):
    exp, got = both
    n_test = int(pd.read_csv(ROOT / "results" / "ci" / "tables" / "baseline.csv")["test_images"].iloc[0])
    tol = 100.0 / n_test + 1e-6     # one image of image->text recall
    diff = (got[KEYS] - exp[KEYS]).abs()
    assert (diff <= tol).all().all(), f"metrics moved by more than {tol:.2f} points:\n{diff.round(2)}"
    assert (got["rsum"] - exp["rsum"]).abs().max() <= 6 * tol


"""The CI chain's key metrics against stored values (run after nbval re-executed it).

``make book-ci`` executes the chain at the ``ci`` profile into ``results/ci``, records the numeric environment it
ran in (``results/ci/environment.json``: torch version, CPU kernel paths of ATen, MKL and oneDNN, thread count) and
stores its per-run test metrics in ``expected_ci_metrics.csv``; ``make test`` re-executes those notebooks with nbval
(in place), then this test compares what they regenerated.

The tolerance follows from what makes runs differ (docs/REPRODUCIBILITY.md): the seed fixes everything except the
CPU kernels' summation order, which depends on the kernel paths and the thread count.  In the same numeric
environment (the Makefile pins the kernel paths) a rerun is bit-identical, so the metrics must be equal.  In another
environment no bound can be promised (training amplifies a last-bit difference into another selected epoch); the
test then only checks that every run is there and the recalls stay within 10 points, a guard against a broken chain.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from osdpm_lib.train import numeric_environment

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).with_name("expected_ci_metrics.csv")
REGENERATED = ROOT / "results" / "ci" / "tables" / "ablation_runs.csv"
ENVIRONMENT = ROOT / "results" / "ci" / "environment.json"
KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


@pytest.fixture(scope="module")
def both():
    exp = pd.read_csv(EXPECTED).set_index(["variant", "seed"]).sort_index()
    got = pd.read_csv(REGENERATED).set_index(["variant", "seed"]).sort_index()
    return exp, got


def test_same_runs(both):
    exp, got = both
    assert list(got.index) == list(exp.index)


def test_metrics_match_in_the_same_numeric_environment(both):
    exp, got = both
    stored = json.loads(ENVIRONMENT.read_text())
    here = numeric_environment()
    diff = (got[KEYS + ["rsum"]] - exp[KEYS + ["rsum"]]).abs()
    if stored == here:
        assert (diff <= 1e-9).all().all(), f"same numeric environment {here}, yet metrics moved:\n{diff.round(4)}"
    else:
        assert (diff[KEYS] <= 10.0).all().all(), f"another numeric environment ({stored} -> {here}):\n{diff.round(2)}"
        pytest.skip(f"numeric environment differs from the stored run ({stored} vs {here}): no equality promised")

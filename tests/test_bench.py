"""The benchmark's ``ci`` mode, in-process with very few steps: structure of the report, no timings asserted."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from osdpm_lib import bench  # noqa: E402
from osdpm_lib.bench import Setting  # noqa: E402


def _cells(md: str, first: str) -> list[str]:
    """The cells of the table row whose first cell starts with ``first``."""
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0].startswith(first):
                return cells
    raise AssertionError(f"no table row starting with {first!r} in:\n{md}")


def _num(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.md"
    # an existing section of another mode must survive
    bench.write_section(out, "gpu", "<!-- bench:gpu:begin -->\n## Mode `gpu`\nkept\n<!-- bench:gpu:end -->\n")
    plan = ["eval", Setting(16),
            ("e2e", "images on device", {"n_train": 32, "n_val": 8, "n_test": 8, "epochs": 1, "batch": 16,
                                         "on_device": True})]
    res = bench.run_mode("ci", out=out, threads=1, verbose=False, warmup=1, steps=1, rounds=1, eval_images=16,
                         plan=plan)
    return out, res


def test_report_rows_and_positive_numbers(ci_run):
    out, res = ci_run
    md = res["markdown"]
    assert md.startswith("<!-- bench:ci:begin -->") and md.rstrip().endswith("<!-- bench:ci:end -->")
    for needle in ("### Training throughput", "### Evaluation", "### End-to-end", "- machine:", "torch "):
        assert needle in md
    row = _cells(md, "eager, batch 16")
    clip, osdpm, ratio = _num(row[1]), _num(row[2]), _num(row[3])
    assert clip > 0 and osdpm > 0 and ratio == pytest.approx(osdpm / clip, rel=0.02)
    assert row[4] in ("pass", "**fail**")
    assert all(_num(c) > 0 for c in row[5:9])            # step ms and peak memory of both variants
    for first in ("encode 16 images", "images/s", "encode 80 captions", "evaluation total"):
        vals = _cells(md, first)[1:3]
        assert all(_num(v) > 0 for v in vals), (first, vals)
    met = _cells(md, "retrieval_metrics 1,093 x 5,465")
    assert _num(met[1]) > 0 and met[3] == "<= 0.2" and met[4] in ("pass", "**fail**")
    e2e = _cells(md, "images on device")
    assert int(e2e[1]) == 1 and _num(e2e[5]) > 0 and _num(e2e[6]) > 0
    assert "_Partial" not in md
    goal = _cells(md, "osdpm / clip pairs/s >= 0.9")
    assert goal[2] in ("pass", "**fail**") and "eager, batch 16" in goal[1]


def test_state_figures(ci_run):
    _, res = ci_run
    st = res["state"]
    r = st["training"]["eager, batch 16"]
    for v in ("clip", "osdpm"):
        assert r[v]["pairs_per_s"] > 0 and r[v]["peak_mem_mib"] > 0 and len(r[v]["rounds"]) == 1
        assert st["eval"][v]["images_per_s"] > 0
    assert 0 < st["metrics_s"]
    assert st["e2e"]["images on device"]["wall_s"] >= st["e2e"]["images on device"]["train_s"] > 0
    assert st["pending"] == [] and st["skipped"] == []


def test_out_file_keeps_other_modes_and_replaces_own(ci_run, tmp_path):
    out, res = ci_run
    text = out.read_text()
    assert text.count("<!-- bench:ci:begin -->") == 1 and "kept" in text
    assert text.index("bench:gpu:begin") < text.index("bench:ci:begin")
    # rewriting a section replaces it in place
    bench.write_section(out, "gpu", "<!-- bench:gpu:begin -->\nnew gpu\n<!-- bench:gpu:end -->\n")
    text2 = out.read_text()
    assert "new gpu" in text2 and "kept" not in text2 and text2.count("bench:gpu:begin") == 1
    assert res["markdown"] in text2


def test_rsicd_estimate_formula():
    ev = {"total_s": 0.5, "images_s": 0.1}
    assert bench.rsicd_estimate(4000.0, None) == pytest.approx(50.0)
    assert bench.rsicd_estimate(4000.0, ev) == pytest.approx(50.0 + 21 * 0.5 + 3 * 0.1)


def test_unknown_mode():
    with pytest.raises(KeyError, match="unknown mode"):
        bench.run_mode("tpu")

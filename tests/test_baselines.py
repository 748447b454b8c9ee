"""Tests of the comparison systems (osdpm_lib.baselines): shapes, learning on a tiny set, batched = unbatched score
matrices within a memory budget, SCAN's closed form against the explicit attention, GaLR's re-ranking at the level
of the metrics, VSE++'s hardest negative against VSE0's sum on a hand-computed case, the rows' texts, one
end-to-end run under the book's protocol, notebook 08's code path on data without a val split, and one training
step on CUDA (skipped without it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osdpm_lib import metrics, profiles, synth
from osdpm_lib.baselines import OPEN, SYSTEMS, common, rerank, rerank_metrics, score_matrix, triplet_loss
from osdpm_lib.baselines import profiles as bprofiles
from osdpm_lib.baselines.encoders import PAD, UNK, GridBackbone, Vocab, grid_stage
from osdpm_lib.baselines.scan import scan_scores
from osdpm_lib.baselines.scoring import GiB, block_sizes

DIMS = dict(channels=16, low_channels=8, grid=4, low_grid=8, vocab_size=30, dim=16, word_dim=8,
            stage_channels=(4, 8, 16, 32), stage_grids=(16, 8, 4, 2))     # layer1 .. layer4 (AMFMN, GaLR)
NAMES = sorted(SYSTEMS)


def _features(n: int, seed: int = 0, name: str | None = None):
    """``(low, high)``; for a system that reads every stage (``name``), ``(layer1, low, high, layer4)``."""
    g = torch.Generator().manual_seed(seed)
    low, high = torch.randn(n, 8, 8, 8, generator=g), torch.randn(n, 16, 4, 4, generator=g)
    if name is None or not SYSTEMS[name].all_stages:
        return low, high
    return torch.randn(n, 4, 16, 16, generator=g), low, high, torch.randn(n, 32, 2, 2, generator=g)


def _tokens(n: int, seed: int = 0, width: int = 7):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(2, 30, (n, width), generator=g)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    tok[torch.arange(width)[None] >= lengths[:, None]] = PAD
    return tok


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return SYSTEMS[name].factory(**DIMS)


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    model = _model(name).eval()
    img = model.encode_image(*_features(5, name=name))
    txt = model.encode_text(_tokens(9))
    assert all(x.shape[0] == 5 for x in img) and all(x.shape[0] == 9 for x in txt)
    s = model.score(img, txt)
    assert s.shape == (5, 9) and torch.isfinite(s).all()
    assert s.abs().max() <= 1.0 + 1e-5          # every system scores cosines (or means / LSE-normalised ones)
    assert model.pair_bytes(img, txt) > 0


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_on_tiny_set(name):
    model = _model(name).train()
    feats = _features(8, seed=1, name=name)
    tok = _tokens(8, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model.loss(model.score(model.encode_image(*feats), model.encode_text(tok)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0 and np.mean(losses[-5:]) < 0.5 * losses[0], losses[::8]


@pytest.mark.parametrize("name", NAMES)
def test_batched_scores_equal_unbatched(name, monkeypatch):
    model = _model(name).eval()
    with torch.no_grad():
        img, txt = model.encode_image(*_features(7, name=name)), model.encode_text(_tokens(11))
        full = model.score(img, txt).numpy()
    budget = 3 * model.pair_bytes(img, txt)        # at most 3 pairs per block: many small blocks
    seen = []
    inner = model.score
    monkeypatch.setattr(model, "score", lambda i, t: (seen.append(len(i[0]) * len(t[0])), inner(i, t))[1])
    blocked = score_matrix(model, img, txt, budget_bytes=budget)
    np.testing.assert_allclose(blocked, full, rtol=1e-5, atol=1e-6)
    assert max(seen) <= 3 and sum(seen) == 7 * 11


def test_block_sizes_fit_the_budget_at_rsicd_size():
    # RSICD's test split: 1,093 images x 5,465 captions; SCAN's blocks at 224 px (7x7 regions, 32 words)
    model = _model("SCAN_t2i")
    img = (torch.zeros(1, 49, 16),)
    txt = (torch.zeros(1, 32, 16), torch.ones(1, 32, dtype=torch.bool))
    per_pair = model.pair_bytes(img, txt)
    bi, bt = block_sizes(1093, 5465, per_pair, 8 * GiB)
    assert bi * bt * per_pair <= 8 * GiB
    assert bi * bt >= 10_000                     # and still large blocks (not pair by pair)
    assert block_sizes(3, 4, 10**12, 1) == (1, 1)   # never below one pair


def _scan_explicit(regions, words, mask, direction):
    """SCAN's func_attention + cosine per pair, with the weighted contexts materialised."""
    out = torch.zeros(len(regions), len(words))
    for i, v in enumerate(regions):
        for t, (w, m) in enumerate(zip(words, mask)):
            w = w[m]                                          # real words [L', d]
            if direction == "t2i":                            # query words, context regions
                attn = F.leaky_relu(v @ w.T, 0.1)             # [R, L']
                attn = attn / (attn.norm(dim=1, keepdim=True) + 1e-8)
                a = torch.softmax(9.0 * attn.T, dim=1)        # [L', R]
                ctx = a @ v
                cos = F.cosine_similarity(w, ctx, dim=1)
                out[i, t] = torch.logsumexp(6.0 * cos, 0) / 6.0
            else:                                             # query regions, context words
                attn = F.leaky_relu(w @ v.T, 0.1)             # [L', R]
                attn = attn / (attn.norm(dim=1, keepdim=True) + 1e-8)
                a = torch.softmax(4.0 * attn.T, dim=1)        # [R, L']
                ctx = a @ w
                out[i, t] = F.cosine_similarity(v, ctx, dim=1).mean()
    return out


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_scan_closed_form_matches_explicit_attention(direction):
    g = torch.Generator().manual_seed(3)
    regions = F.normalize(torch.randn(4, 6, 8, generator=g), dim=-1)
    words = F.normalize(torch.randn(5, 7, 8, generator=g), dim=-1)
    mask = torch.arange(7)[None] < torch.tensor([7, 3, 1, 5, 6])[:, None]
    words = words * mask[..., None]
    got = scan_scores(regions, words, mask, direction)
    np.testing.assert_allclose(got.numpy(), _scan_explicit(regions, words, mask, direction).numpy(), atol=1e-5)


def test_triplet_loss_max_violation():
    s = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.5, 0.6], [0.0, 0.1, 0.7]])
    # image rows: hardest wrong caption 0.8 (0.2+0.8-0.9=0.1), 0.6 (0.3), 0.1 (0); caption columns: 0.2 (0),
    # 0.8 (0.5), 0.6 (0.1)
    assert float(triplet_loss(s, 0.2)) == pytest.approx(0.1 + 0.3 + 0.0 + 0.0 + 0.5 + 0.1)
    s[1, 0] = 0.45      # a second violating caption for image 1: the sum counts it, the hardest negative does not
    assert float(triplet_loss(s, 0.2, max_violation=False)) == pytest.approx(float(triplet_loss(s, 0.2)) + 0.15)


def test_rerank_fixes_a_wrong_top1_at_the_level_of_the_metrics():
    # image 0's captions are 0 and 1, image 1's are 2 and 3.  Caption 2 scores highest for image 0, but image 1
    # scores caption 2 higher still, so image 0 ranks only second when caption 2 queries back; caption 0 ranks
    # image 0 first.  Re-ranking image 0's list by the reverse ranks puts caption 0 on top.
    sims = np.array([[0.50, 0.10, 0.60, 0.00],
                     [0.40, 0.00, 0.90, 0.80]], dtype=np.float32)
    cap_img = np.array([0, 0, 1, 1])
    plain = metrics.retrieval_metrics(sims, cap_img)
    assert plain["i2t_r1"] == 50.0
    s_i2t, s_t2i = rerank(sims, k=2)
    assert np.argmax(s_i2t[0]) in (0, 1) and np.argmax(s_i2t[1]) in (2, 3)   # caption 2 no longer first for image 0
    after = rerank_metrics(sims, cap_img, k=2)
    assert after["i2t_r1"] == 100.0
    assert after["rsum"] == pytest.approx(sum(after[k] for k in metrics.KEYS[:6]))
    # the caption side comes from the transposed re-ranking
    t2i = metrics.retrieval_metrics(s_t2i, cap_img)
    assert after["t2i_r1"] == t2i["t2i_r1"]


def test_rerank_zeroes_candidates_outside_top_k():
    rng = np.random.default_rng(0)
    sims = rng.random((6, 30)).astype(np.float32)
    s_i2t, s_t2i = rerank(sims, k=10)
    assert ((s_i2t > 0).sum(1) == 10).all()           # each image keeps its top 10 captions
    assert ((s_t2i > 0).sum(0) == 6).all()            # k is capped at the number of images
    top = np.argsort(-sims, axis=1)[:, :10]
    assert all(set(np.flatnonzero(s_i2t[i])) == set(top[i]) for i in range(6))


def test_vocab_and_grid_stage():
    v = Vocab(["A dense residential area.", "two planes"], max_len=4)
    tok = v(["planes near a dense forest area , many", "??"])
    assert tok.shape == (2, 4)
    assert tok[0, 3] == v.index["dense"] and tok[0, 1] == UNK and tok[1, 0] == UNK and tok[1, 1] == PAD
    assert v.name_or_path != Vocab(["other words"]).name_or_path
    assert grid_stage(64) == "layer3" and grid_stage(224) == "layer4"
    with pytest.raises(ValueError, match="grid"):
        grid_stage(8)     # 2x2 cells even after layer1
    bb = GridBackbone("resnet18", 64)
    low, high = bb(torch.zeros(2, 3, 64, 64))
    assert high.shape == (2, 256, 4, 4) and low.shape == (2, 128, 8, 8) and bb.grid == 4 and bb.low_grid == 8


def test_profiles_and_open_systems():
    for name in bprofiles.BASELINE_PROFILES:
        for system in bprofiles.baseline_profile(name)["systems"]:
            assert bprofiles.baseline_config(name, system).system in SYSTEMS
    assert not set(OPEN) & set(SYSTEMS)
    with pytest.raises(ValueError, match="unknown system"):
        bprofiles.baseline_config("ci", "LW-MCR(x)")       # no such system


def test_vsepp_trains_on_its_hardest_negative_and_vse0_sits_beside_it():
    for name in bprofiles.BASELINE_PROFILES:
        systems = bprofiles.baseline_profile(name)["systems"]
        if "VSE++" in systems:
            assert bprofiles.baseline_config(name, "VSE++").warmup_epochs == 0          # from the first epoch
        if name in ("default", "ci", "full"):
            assert systems[systems.index("VSE++") + 1] == "VSE0"
        assert bprofiles.baseline_config(name, "VSE0").warmup_epochs is None
    # the other systems keep the profile's warm-up choice; an explicit override still wins
    p = bprofiles.baseline_profile("default")
    assert bprofiles.baseline_config("default", "SCAN_t2i").warmup_epochs == p["warmup_epochs"]
    assert bprofiles.baseline_config("default", "VSE++", warmup_epochs=2).warmup_epochs == 2


def test_vsepp_hardest_negative_and_vse0_sum_on_a_hand_computed_case():
    s = torch.tensor([[0.9, 0.8, 0.1],
                      [0.45, 0.5, 0.6],
                      [0.0, 0.1, 0.7]])
    # hinges 0.2 + s - diag (margin 0.2), positives excluded
    # image queries (rows):     row 0: 0.1, 0 | row 1: 0.15, 0.3 | row 2: 0, 0
    # caption queries (columns): col 0: 0, 0  | col 1: 0.5, 0    | col 2: 0, 0.1
    hardest = 0.1 + 0.3 + 0.0 + 0.0 + 0.5 + 0.1
    total = (0.1 + 0.15 + 0.3) + (0.5 + 0.1)
    vsepp, vse0 = _model("VSE++"), _model("VSE0")
    assert float(vsepp.loss(s)) == pytest.approx(hardest)
    assert float(vse0.loss(s)) == pytest.approx(total)
    assert float(vse0.loss(s, max_violation=True)) == pytest.approx(total)     # VSE0 sums whatever it is asked
    assert type(vse0).__mro__[1] is type(vsepp)                                # the same model otherwise


def test_vsepp_image_side_normalises_the_pooled_feature_before_the_fc():
    # EncoderImageFull (fartashf/vsepp): l2norm(feature) -> fc -> l2norm; a scaled feature map gives the same vector
    model = _model("VSE++").eval()
    low, high = _features(4)
    with torch.no_grad():
        a, = model.encode_image(low, high)
        b, = model.encode_image(low, 7.5 * high)
        pooled = high.flatten(2).mean(2)
        ref = F.normalize(model.img_fc(pooled / pooled.norm(dim=1, keepdim=True)), dim=1)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    np.testing.assert_allclose(a.numpy(), ref.numpy(), atol=1e-6)


def test_rows_say_what_they_replaced_accurately():
    for name in ("VSE++", "VSE0", "SCAN_t2i", "SCAN_i2t"):      # they learn their own word embeddings
        text = SYSTEMS[name].replaced
        assert "skip-thought" not in text and "pretrained word" not in text
    for name in ("SCAN_t2i", "SCAN_i2t", "VSE++"):                # the AMFMN paper's RS rows used a ResNet-18
        assert "Sec. V-C" in SYSTEMS[name].replaced
    for name in ("AMFMN-soft", "AMFMN-fusion", "AMFMN-sim", "GaLR"):
        assert "skip-thought" in SYSTEMS[name].replaced
    assert "frozen" in common("synthpre", False) and "frozen" not in common("IMAGENET1K_V1", True)
    assert "fine-tuned" in common("IMAGENET1K_V1", True) and "IMAGENET1K_V1" in common("IMAGENET1K_V1", True)
    assert "book's pretraining corpus" in common("synthpre") and "random" in common(None)


def test_end_to_end_protocol(tmp_path):
    from osdpm_lib.baselines import run

    data_dir = synth.generate(tmp_path / "emb", n_images=60, seed=0, image_size=64, n_val=12, n_test=12)
    data = run.prepare(data_dir.parent, 64)
    df = run.run_baselines(data_dir.parent, tmp_path / "runs", "ci", systems=["VSE++", "GaLR"], data=data,
                           log=lambda *_: None)
    assert list(df["method"]) == ["VSE++", "GaLR", "GaLR (no re-ranking)"]
    for r in df.to_dict("records"):
        assert 0 <= r["mr"] <= 100 and r["rsum"] == pytest.approx(6 * r["mr"])
    saved = json.loads((run.run_folder(tmp_path / "runs", "ci", "VSE++", 0) / "result.json").read_text())
    assert run.run_folder(tmp_path / "runs", "ci", "VSE++", 0) != run.run_folder(tmp_path / "runs", "full", "VSE++", 0)
    hist = saved["history"]
    # the selected epoch is the first of the best validation Rsum, and the test row is the saved one
    assert saved["best_epoch"] == 1 + int(np.argmax([h["val_rsum"] for h in hist]))
    assert saved["test"]["rsum"] == pytest.approx(df.loc[0, "rsum"])
    # a second call reuses the finished runs
    again = run.run_baselines(data_dir.parent, tmp_path / "runs", "ci", systems=["VSE++"], data=data,
                              log=lambda *_: None)
    assert again.loc[0, "rsum"] == df.loc[0, "rsum"]


def _fake_runs():
    rows = []
    for method, seed, base in (("VSE++", 0, 1.0), ("VSE++", 1, 3.0), ("GaLR", 0, 2.0)):
        rows.append({"method": method, "seed": seed, "replaced": f"common; {method} part",
                     **{k: base for k in metrics.KEYS[:6]}, "rsum": 6 * base, "mr": base})
    import pandas as pd
    return pd.DataFrame(rows)


def test_baseline_rows_join_tables_1_and_2():
    import pandas as pd
    from osdpm_lib import tables

    means = tables.baseline_means(_fake_runs())
    assert list(means["method"]) == ["VSE++", "GaLR"] and list(means["n_seeds"]) == [2, 1]
    assert means.loc[0, "rsum"] == pytest.approx(12.0) and means.loc[0, "rsum_std"] == pytest.approx(np.std([6, 18], ddof=1))
    measured = pd.DataFrame([{"method": "OSDPM (this book)", **{k: 5.0 for k in metrics.KEYS[:6]}}])
    t1 = tables.comparison_table("RSICD", measured, "embedded")
    once = tables.add_baselines(t1, means, "embedded")
    twice = tables.add_baselines(once, means, "embedded")            # repeatable: rows replaced, not duplicated
    pd.testing.assert_frame_equal(once, twice)
    new = once.iloc[len(t1):]
    assert list(new["method"]) == ["VSE++ (measured here)", "GaLR (measured here)"]
    assert (new["measured_here"] == "yes").all() and (new["evaluated_on"] == "embedded test (measured here)").all()
    assert list(new["differs_from_original"]) == ["common; VSE++ part", "common; GaLR part"]
    assert (once.iloc[:len(t1)]["differs_from_original"] == "").all()
    # the reported VSE++ row stays beside the measured one
    assert ((once["method"] == "VSE++") & (once["measured_here"] == "no")).sum() == 1


def test_notebook_08_runs_in_the_chain_with_the_common_parameters(tmp_path):
    import jupytext
    import papermill as pm

    from osdpm_lib import runner

    assert [p.stem for p in runner.notebooks()][-1] == "08_baselines"     # after the tables it adds rows to
    src = [p for p in runner.notebooks(["08"]) if p.stem == "08_baselines"]
    assert src, "notebooks/08_baselines.py is not picked up by the runner"
    declared = pm.inspect_notebook(runner._write_tmp(jupytext.read(src[0]), tmp_path / "08.ipynb"))
    assert {"dataset", "profile", "data_dir", "out_dir", "runs_dir", "val_fraction", "retrain_full"} <= set(declared)
    assert declared["val_fraction"]["default"] == "0.0" and declared["retrain_full"]["default"] == "False"
    # make baselines-full: the profile's seeds or some of them, Tables 1-2 read from the book's results
    assert declared["seeds"]["default"] == declared["tables_dir"]["default"] == '""'
    for name in profiles.PROFILES:          # every chain profile has baseline sizes: the chain never stops at 08
        assert bprofiles.baseline_profile(name)["systems"]


def test_notebook_08_code_path_on_data_without_a_val_split(tmp_path):
    """What notebook 08 calls, at the ci profile's sizes, on a data set with train and test only: a val split is
    carved from train per seed (val_fraction), every run trains, selects on it and scores test, and with
    retrain_full each run is retrained on train+val at its selected epoch."""
    from osdpm_lib import tables
    from osdpm_lib.baselines import run

    data_dir = synth.generate(tmp_path / "noval", n_images=40, seed=1, image_size=32, n_val=0, n_test=8).parent
    with pytest.raises(ValueError, match="split 'val' is empty"):
        run.prepare(data_dir, 64)
    runs_dir = tmp_path / "runs"
    df = run.run_baselines(data_dir, runs_dir, "ci", systems=["VSE++", "GaLR"], log=lambda *_: None,
                           val_fraction=0.2, retrain_full=True)
    assert list(df["method"]) == ["VSE++", "GaLR", "GaLR (no re-ranking)"]
    for r in df.to_dict("records"):
        assert 0 <= r["mr"] <= 100 and r["rsum"] == pytest.approx(6 * r["mr"])
        assert 0 <= r["retrain_mr"] <= 100 and 1 <= r["best_epoch"] <= 2
    saved = json.loads((run.run_folder(runs_dir, "ci", "VSE++", 0) / "result.json").read_text())
    assert len(saved["history"]) == 2 and "val_rsum" in saved["history"][0]
    full = json.loads((run.run_folder(runs_dir, "ci", "VSE++", 0) / run.FULL_DIR / "result.json").read_text())
    assert full["epochs"] == saved["best_epoch"] and full["data_key"] != saved["data_key"]
    # the carved split: round(0.2 * 32) = 6 of the 32 training images, drawn with the run seed
    data = run.prepare(data_dir, 64, val_fraction=0.2, seed=0)
    assert len(data.bundle.val.records) == 6 and len(data.bundle.train.records) == 26
    assert data.key == saved["data_key"]
    merged = run.prepare(data_dir, 64, val_fraction=0.2, seed=0, full=True)
    assert len(merged.bundle.train.records) == 32 and not merged.bundle.val.records
    # the notebook's next cell: the means and each row's paired CI against the fine-tuned CLIP
    means = tables.baseline_means(df)
    assert list(means["method"]) == ["VSE++", "GaLR", "GaLR (no re-ranking)"]
    vs = run.versus_clip(df, runs_dir, "ci", n_boot=200)                # no CLIP runs in this chain: no crash
    assert list(vs["method"]) == list(means["method"]) and vs["vs_clip"].str.startswith("no fine-tuned CLIP").all()
    assert vs["vs_clip_ci_low"].isna().all()
    # each run's stored per-image contributions give its test row back (GaLR: re-ranked; its plain row: plain)
    from osdpm_lib.stats import rsum
    for r in df.to_dict("records"):
        assert rsum(run.test_contributions(runs_dir, "ci", r["method"], r["seed"])) == pytest.approx(r["rsum"])
    # with a CLIP run of seed 0 on the same test split (one stored as notebook 05 stores it)
    from osdpm_lib.evaluate import Encoded
    from osdpm_lib.profiles import run_name

    cap_img = data.bundle.test.caption_image.numpy()
    g = np.random.default_rng(0)
    clip_dir = tmp_path / "clip_runs" / run_name("clip", 0)
    clip_dir.mkdir(parents=True)
    Encoded(g.normal(size=(len(data.bundle.test.records), 4)), g.normal(size=(len(cap_img), 4)), cap_img).save(
        clip_dir / "test_encoded.npz")
    vs = run.versus_clip(df, runs_dir, "ci", clip_dir=tmp_path / "clip_runs", n_boot=200)
    assert vs["vs_clip_ci_low"].notna().all() and (vs["vs_clip_ci_low"] <= vs["vs_clip_ci_high"]).all()
    assert (vs["vs_clip_seeds"] == "0").all()
    clip_rsum = rsum(run.clip_contributions(tmp_path / "clip_runs")[0])
    np.testing.assert_allclose(vs["vs_clip_rsum"], means["rsum"] - clip_rsum)   # one seed: the observed difference
    assert vs["vs_clip"].str.contains("finding: |no difference shown", regex=True).all()
    means = means.merge(vs, on="method", how="left")
    assert tables.add_baselines(tables.comparison_table("RSICD", means.head(0), "embedded"), means, "embedded").shape[0]


def _one_step_on(device: str, precision: str, systems, tmp_path, monkeypatch):
    """Train ``systems`` for one epoch of one step (8 of 8 training images) on ``device``; the loss sees scores
    on that device, the result says where it ran."""
    from osdpm_lib.baselines import run
    from osdpm_lib.baselines.scoring import Baseline

    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    data = run.prepare(data_dir, 64)
    seen = []
    real = Baseline.loss

    def spy(self, scores, max_violation=True):
        seen.append((scores.device.type, next(self.parameters()).device.type, scores.dtype))
        return real(self, scores, max_violation)

    monkeypatch.setattr(Baseline, "loss", spy)
    for system in systems:
        cfg = run.BaselineConfig(system, epochs=1, batch_size=8, dim=16, word_dim=8, device=device,
                                 precision=precision)
        dev, amp = cfg.resolve_device()
        assert dev.type == device and amp == torch.bfloat16
        res = run.train_system(cfg, data, tmp_path / system)
        assert res["device"] == device and res["amp"] == "torch.bfloat16"
        assert np.isfinite(res["test"]["rsum"]) and 0 <= res["test"]["mr"] <= 100
    assert len(seen) == len(systems) and all(s == (device, device, torch.float32) for s in seen)   # loss in fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_one_baseline_training_step_on_cuda(tmp_path, monkeypatch):
    _one_step_on("cuda", "auto", ["VSE++", "SCAN_t2i", "GaLR"], tmp_path, monkeypatch)   # auto: bf16 on CUDA
    # a CUDA run is another run than the CPU one of the same fields
    from osdpm_lib.baselines import run
    assert run.BaselineConfig("VSE++", device="cuda").key() != run.BaselineConfig("VSE++", device="cpu").key()


def test_the_autocast_path_on_the_cpu(tmp_path, monkeypatch):
    # what CUDA runs under (bf16 autocast, the loss in fp32), exercised where no GPU is
    _one_step_on("cpu", "bf16", ["VSE++", "AMFMN-soft"], tmp_path, monkeypatch)


def test_cpu_runs_keep_their_identity():
    # device/precision at the CPU in fp32 leave the key as it was before these fields existed
    import dataclasses
    import hashlib

    # (a system whose model has not changed since: a changed one adds its revision to the key)
    cfg = bprofiles.BaselineConfig("SCAN_t2i", device="cpu", precision="fp32")
    later = ("device", "precision", "epoch_unit", "augment", "patience", "unlabeled_images",
             "unlabeled_epochs")                                   # at their defaults: not in the key
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in later}
    assert cfg.key() == hashlib.sha1(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert cfg.resolve_device() == (torch.device("cpu"), None)
    assert bprofiles.BaselineConfig("SCAN_t2i", device="cpu", precision="bf16").key() != cfg.key()
    galr = bprofiles.BaselineConfig("GaLR", device="cpu", precision="fp32")
    old = {k: v for k, v in dataclasses.asdict(galr).items() if k not in later}
    assert galr.key() == hashlib.sha1(json.dumps(old | {"revision": SYSTEMS["GaLR"].revision},
                                                 sort_keys=True).encode()).hexdigest()[:16]
    with pytest.raises(ValueError, match="precision"):
        bprofiles.BaselineConfig("GaLR", precision="fp16")


@pytest.mark.parametrize("name", ["SCAN_t2i", "VSE++"])
def test_evaluate_scores_repeated_captions_once_with_the_same_matrix(name, monkeypatch):
    from types import SimpleNamespace

    from osdpm_lib.baselines import run

    model = _model(name).eval()
    low, high = _features(5)
    tok = _tokens(6, seed=2)
    tok = torch.cat([tok, tok[[0, 3, 3, 5]]])                     # 10 captions, 6 distinct token rows
    split = SimpleNamespace(tokens=tok, records=[None] * 5, caption_image=torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]))
    visual = lambda idx: (low[idx], high[idx])                      # noqa: E731
    cfg = run.BaselineConfig(name, eval_batch=4)
    seen = []
    real = run.score_matrix
    monkeypatch.setattr(run, "score_matrix", lambda m, i, t, b: seen.append(len(t[0])) or real(m, i, t, b))
    _, sims = run.evaluate(model, visual, split, cfg)
    img, txt = run.encode(model, visual, tok, 5, 4)
    full = real(model, img, txt)
    assert seen == [6] and sims.shape == (5, 10)
    np.testing.assert_allclose(sims, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sims[:, 6], sims[:, 0])        # a repeated caption: the same column

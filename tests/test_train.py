import dataclasses
import math
import json

import numpy as np
import pandas as pd
import pytest
import torch

from osdpm_lib import profiles, synth
from osdpm_lib.evaluate import Encoded
from osdpm_lib.metrics import retrieval_metrics
from osdpm_lib.train import load_trained, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embedded")
    synth.generate(d, n_images=150, seed=3)
    return d


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    cfg = profiles.train_config("ci", "osdpm", 0, epochs=3, batch_size=16, progress=False)
    run_dir = tmp_path_factory.mktemp("runs") / "osdpm_s0"
    return cfg, run_dir, train(cfg, data_dir, run_dir)


def test_run_folder(run):
    cfg, run_dir, res = run
    for f in ("config.json", "metrics.csv", "best.pt", "test_metrics.json", "embeddings.npz", "test_encoded.npz",
              "val_encoded.npz"):
        assert (run_dir / f).exists(), f
    assert json.loads((run_dir / "config.json").read_text())["variant"] == "osdpm"
    hist = pd.read_csv(run_dir / "metrics.csv")
    assert list(hist.epoch) == [0, 1, 2, 3]        # epoch 0: the starting weights, scored on validation
    assert {"loss_total", "loss_contrastive", "loss_osfcm", "val_rsum", "pairs_per_s"} <= set(hist.columns)
    assert hist.loss_osfcm.iloc[0] != hist.loss_osfcm.iloc[0]      # NaN: nothing trained yet
    assert (hist.loss_osfcm.iloc[1:] > 0).all()
    assert hist.dapn_ratio.iloc[0] == 0 and (hist.dapn_ratio.iloc[1:] > 0).all()   # DAPN's share of the embedding


def test_val_encoded_is_the_selected_epochs_validation(run):
    _, run_dir, res = run
    enc = Encoded.load(run_dir / "val_encoded.npz")
    assert retrieval_metrics(enc.sims(), enc.caption_image)["rsum"] == pytest.approx(res["best_val_rsum"])


def test_selection_on_validation_only(run):
    _, run_dir, res = run
    hist = pd.read_csv(run_dir / "metrics.csv")
    assert res["best_epoch"] == int(hist.epoch[hist.val_rsum.idxmax()])   # first maximum of val Rsum
    assert res["best_val_rsum"] == pytest.approx(hist.val_rsum.max())
    assert not any(c.startswith("test") for c in hist.columns)


def test_stored_test_metrics_match_stored_embeddings(run):
    _, run_dir, res = run
    enc = Encoded(**np.load(run_dir / "test_encoded.npz"))
    assert retrieval_metrics(enc.sims(), enc.caption_image) == pytest.approx(res["test"])
    stages = np.load(run_dir / "embeddings.npz")
    assert set(stages.files) == {"start", "mid", "end"}


def test_reloaded_model_reproduces_test_embeddings(run, data_dir):
    from osdpm_lib.cache import Normalizer, SplitTensors
    from osdpm_lib.data import load

    _, run_dir, _ = run
    model, tok, pre, cfg = load_trained(run_dir)
    split = SplitTensors.build(load(data_dir).split("test"), data_dir / "images", pre["image_size"], tok)
    with torch.no_grad():
        z = model.encode_image(Normalizer(pre["mean"], pre["std"])(split.images)).numpy()
    np.testing.assert_allclose(z, np.load(run_dir / "test_encoded.npz")["images"], atol=1e-5)


def test_finished_run_is_reused(run, data_dir):
    cfg, run_dir, res = run
    mtime = (run_dir / "best.pt").stat().st_mtime_ns
    assert train(cfg, data_dir, run_dir) == res
    assert (run_dir / "best.pt").stat().st_mtime_ns == mtime


def test_zero_shot_run_scores_the_pretrained_weights(data_dir, tmp_path):
    """epochs=0: no step is taken; the selected epoch is 0 and the test row is the starting model's."""
    from osdpm_lib.cache import Normalizer, SplitTensors
    from osdpm_lib.data import load
    from osdpm_lib.evaluate import encode_images, encode_texts
    from osdpm_lib.train import build_model

    cfg = profiles.train_config("ci", "clip", 0, epochs=0, progress=False)
    res = train(cfg, data_dir, tmp_path / "zs")
    assert res["best_epoch"] == 0 and list(pd.read_csv(tmp_path / "zs" / "metrics.csv").epoch) == [0]
    model, tok, pre = build_model(cfg)
    split = SplitTensors.build(load(data_dir).split("test"), data_dir / "images", pre["image_size"], tok)
    enc = Encoded(encode_images(model, split.images, Normalizer(pre["mean"], pre["std"])),
                  encode_texts(model, split.tokens), split.caption_image.numpy())
    assert enc.metrics() == pytest.approx(res["test"])


def test_frozen_backbone_trains_only_projections_and_modules():
    """One optimisation step with a frozen backbone moves DAPN, OSFCM, the two projections and the temperature,
    and no other backbone weight."""
    from osdpm_lib import lexicon
    from osdpm_lib.cache import Normalizer
    from osdpm_lib.train import Stepper, build_model

    cfg = profiles.train_config("ci", "osdpm", 0, freeze_backbone=True, progress=False, augment=False)
    model, tok, pre = build_model(cfg)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    step = Stepper(model, cfg, Normalizer(pre["mean"], pre["std"]), torch.device("cpu"), None, total_steps=10)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, pre["image_size"], pre["image_size"]), dtype=torch.uint8, generator=g)
    prior = torch.softmax(torch.randn(8, len(lexicon.CATEGORY_NAMES), generator=g), dim=1)
    for _ in range(2):      # the first step of the schedule has a small learning rate; two to be sure
        step(images, tok([f"caption {i}" for i in range(8)]), prior, g)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(start[k], v)}
    moved = {k for k in changed if k.startswith("clip.")}     # the temperature may sit at its clamp
    assert {"clip.visual.proj", "clip.text_projection"} <= moved <= {"clip.visual.proj", "clip.text_projection",
                                                                     "clip.logit_scale"}
    assert any(k.startswith("dapn.") for k in changed) and any(k.startswith("osfcm.") for k in changed)


@pytest.mark.filterwarnings("ignore:Detected call of")   # the schedule is stepped alone here
def test_method_config_plumbing():
    """DAPN's config dataclass and OSFCM's options reach the model, the loss and the warm-up; config.json round-trips."""
    import dataclasses

    from osdpm_lib.cache import Normalizer
    from osdpm_lib.models import DAPNConfig
    from osdpm_lib.train import Stepper, TrainConfig, build_model

    cfg = profiles.train_config("ci", "osdpm", 0, dapn={"layers": [-2], "rounds": 1, "scales": [4, 2]},
                                osfcm_prototypes="fixed", osfcm_ambiguity="entropy", osfcm_warmup_frac=0.5,
                                osfcm_target="high", progress=False)
    assert cfg.dapn == DAPNConfig(layers=(-2,), rounds=1, scales=(4, 2))
    again = TrainConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.key() == cfg.key()
    assert cfg.key() != profiles.train_config("ci", "osdpm", 0, progress=False).key()
    model, tok, pre = build_model(cfg)
    assert model.dapn.cfg.layers == (-2,) and model.dapn.collab.rounds == 1 and model.dapn.region.scales == (4, 2)
    assert model.osfcm.mode == "fixed"
    step = Stepper(model, cfg, Normalizer(pre["mean"], pre["std"]), torch.device("cpu"), None, total_steps=10)
    assert step.loss_fn.ambiguity == "entropy"
    scales = []
    for _ in range(6):
        scales.append(step.lambda_scale())
        step.sched.step()
    assert scales == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])      # 5 warm-up steps of 10
    with pytest.raises(ValueError, match="osfcm_target"):
        profiles.train_config("ci", "osdpm", 0, osfcm_target="most")


def test_text_prototypes_follow_the_text_tower(data_dir, tmp_path, monkeypatch):
    """``osfcm_prototypes="text"``: at the start of each epoch the prototypes are set to the current text tower's
    category embeddings."""
    from osdpm_lib import lexicon, models

    calls = []
    orig = models.OSFCM.set_prototypes

    def spy(self, embeddings):
        calls.append(embeddings.clone())
        orig(self, embeddings)
        assert torch.equal(self.prototypes, torch.nn.functional.normalize(embeddings.float(), dim=-1))

    monkeypatch.setattr(models.OSFCM, "set_prototypes", spy)
    cfg = profiles.train_config("ci", "osdpm", 0, epochs=2, batch_size=16, osfcm_prototypes="text", progress=False,
                                stage_embeddings=False)
    train(cfg, data_dir, tmp_path / "run")
    assert len(calls) == 2 and calls[0].shape[0] == len(lexicon.CATEGORY_NAMES)
    assert not torch.allclose(calls[0], calls[1], atol=1e-4)     # the text tower moved during epoch 1


def test_config_key_of_osdpm_follows_the_lexicon(monkeypatch):
    """A finished OSDPM run is not reused once the lexicon (its prior's categories and terms) changes;
    the CLIP baselines do not read the lexicon and keep their key."""
    from osdpm_lib import lexicon

    osdpm, clip = (profiles.train_config("ci", v, 0) for v in ("osdpm", "clip"))
    before = osdpm.key(), clip.key()
    monkeypatch.setattr(lexicon, "CATEGORIES", {**lexicon.CATEGORIES, "tower": ("tower",)})
    assert osdpm.key() != before[0] and clip.key() == before[1]


def test_schedule_is_linear_warmup_then_half_cosine_to_zero():
    from osdpm_lib.train import cosine_with_warmup

    fn = cosine_with_warmup(total_steps=10, warmup_steps=2)
    assert [fn(s) for s in (0, 1)] == [0.5, 1.0]                              # (step + 1) / warmup
    assert fn(2) == 1.0 and fn(6) == pytest.approx(0.5) and fn(10) == pytest.approx(0.0, abs=1e-12)
    assert fn(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert fn(20) == pytest.approx(0.0, abs=1e-12)                           # progress capped at 1
    assert cosine_with_warmup(10, 0)(0) == 1.0
    one = cosine_with_warmup(total_steps=2, warmup_steps=1)                 # one warm-up step, one decay step
    assert [one(0), one(1), one(2)] == [1.0, 1.0, pytest.approx(0.0, abs=1e-12)]


def test_param_groups_split_weight_decay_by_shape_and_name_and_give_modules_their_lr():
    from osdpm_lib.train import TrainConfig, build_model, param_groups

    cfg = TrainConfig(variant="osdpm", lr=1e-4, module_lr=1e-3, weight_decay=0.2, progress=False)
    model, _, _ = build_model(cfg)
    decay, no_decay, modules = param_groups(model, cfg)
    names = {id(p): n for n, p in model.clip.named_parameters()}
    assert (decay["lr"], decay["weight_decay"]) == (1e-4, 0.2)
    assert (no_decay["lr"], no_decay["weight_decay"]) == (1e-4, 0.0)
    assert (modules["lr"], modules["weight_decay"]) == (1e-3, 0.0)
    assert all(p.ndim >= 2 and "embedding" not in names[id(p)] for p in decay["params"])
    assert {"visual.conv1.weight", "text_projection"} <= {names[id(p)] for p in decay["params"]}   # 4-D, 2-D
    nd = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "token_embedding.weight", "positional_embedding", "ln_final.weight"} <= nd
    assert [id(p) for p in modules["params"]] == [id(p) for p in model.module_parameters()]
    assert len(decay["params"]) + len(nd) == len(list(model.clip.parameters()))


def test_stepper_hands_its_settings_to_augmentation_optimiser_schedule_and_clamps_the_temperature(monkeypatch):
    """What one step is built from and does, by spying on the augmentations and the forward pass: the rank/world
    and recipe settings reach the augmentations, the channels-last layout the model, AdamW gets CLIP's betas and
    eps, the schedule's warm-up is warmup_frac of the steps, and the temperature is clamped at 100 after the step."""
    from osdpm_lib import lexicon
    from osdpm_lib import train as train_mod
    from osdpm_lib.cache import Normalizer
    from osdpm_lib.train import Stepper, TrainConfig, build_model

    seen = {}

    def spy_augment(x, gen, rank, world):
        seen["augment"] = (rank, world)
        seen["augment_gen"] = gen
        return x

    def spy_recipe(x, gen, crop_scale, n_ops, magnitude):
        seen["recipe"] = (crop_scale, n_ops, magnitude)
        seen["recipe_gen"] = gen
        return x
    monkeypatch.setattr(train_mod, "augment", spy_augment)
    monkeypatch.setattr(train_mod, "recipe_augment", spy_recipe)
    cfg = TrainConfig(variant="osdpm", augment=True, channels_last=True, crop_scale=(0.5, 1.0), rand_augment=2,
                      rand_augment_magnitude=5, warmup_frac=0.5, lambda_osfcm=0.3, progress=False)
    model, tok, pre = build_model(cfg)
    step = Stepper(model, cfg, Normalizer(pre["mean"], pre["std"]), torch.device("cpu"), None, total_steps=10)
    assert step.optim.defaults["betas"] == (0.9, 0.98) and step.optim.defaults["eps"] == 1e-6
    assert step.optim.defaults["fused"] is True                                # fused AdamW
    weights = []
    loss_fn = step.loss_fn

    def spy_loss(out, prior, lambda_scale=1.0):
        weights.append(lambda_scale)
        return loss_fn(out, prior, lambda_scale)
    step.loss_fn = spy_loss
    assert step.sched.lr_lambdas[0](0) == pytest.approx(1 / 5)                 # 5 warm-up steps of 10
    assert loss_fn.lambda_osfcm == 0.3
    forward = step.fwd

    def spy_forward(imgs, tokens):
        seen["channels_last"] = imgs.is_contiguous(memory_format=torch.channels_last)
        return forward(imgs, tokens)
    step.fwd = spy_forward
    with torch.no_grad():
        model.clip.logit_scale.fill_(10.0)                                     # exp(10) >> 100
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, pre["image_size"], pre["image_size"]), dtype=torch.uint8, generator=g)
    prior = torch.softmax(torch.randn(4, len(lexicon.CATEGORY_NAMES), generator=g), dim=1)
    step(images, tok([f"caption {i}" for i in range(4)]), prior, g)
    assert seen == {"augment": (0, 1), "recipe": ((0.5, 1.0), 2, 5), "channels_last": True, "augment_gen": g,
                    "recipe_gen": g}                                          # the run's own generator
    assert float(model.clip.logit_scale.detach()) == pytest.approx(math.log(100))
    # OSFCM's warm-up (osfcm_warmup_frac 0.3 of 10 steps: 3) weighs the first step's loss by 1/3
    assert weights == [pytest.approx(1 / 3)] and step.lambda_scale() == pytest.approx(2 / 3)
    with torch.no_grad():
        model.clip.logit_scale.fill_(-1.0)                                     # below exp(0) = 1
    step(images, tok([f"caption {i}" for i in range(4)]), prior, g)
    assert float(model.clip.logit_scale.detach()) == 0.0                      # clamped at 0 from below
    no_warmup = dataclasses.replace(cfg, osfcm_warmup_frac=0.0)
    assert Stepper(model, no_warmup, Normalizer(pre["mean"], pre["std"]), torch.device("cpu"), None,
                   total_steps=10).lambda_scale() == 1.0
    clip_cfg = TrainConfig(variant="clip", lambda_osfcm=0.3, progress=False)
    clip_model, _, _ = build_model(clip_cfg)
    assert Stepper(clip_model, clip_cfg, Normalizer(pre["mean"], pre["std"]), torch.device("cpu"), None,
                   total_steps=10).loss_fn.lambda_osfcm == 0.0                 # no OSFCM term for the baselines

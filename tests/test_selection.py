"""The protocol of ``train.train``, checked by what it does rather than by how a training run happened to go:
which split is encoded when, which epoch is selected (validation Rsum values are fed in, ties included), which
weights the single test evaluation sees, and which prior rows and captions each optimisation step receives.

The data are a hand-made :class:`~osdpm_lib.train.Bundle` (random distinct images, two captions per image, a random
prior row per training image), so every image and prior row can be told apart."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from osdpm_lib.evaluate import Encoded
import torch

from osdpm_lib import checkpoints, lexicon
from osdpm_lib import train as train_mod
from osdpm_lib.cache import Normalizer, SplitTensors
from osdpm_lib.data import ImageRecord
from osdpm_lib.models import preprocess_config, tokenizer_for
from osdpm_lib.train import Bundle, TrainConfig, train

N_TRAIN, N_VAL, N_TEST, BATCH = 24, 6, 6, 8     # 3 steps per epoch


@pytest.fixture(autouse=True)
def _restore_threads():
    """The runs below use one torch thread (``threads=1``, a process-wide setting): restored afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _split(name: str, n: int, size: int, tok, gen: torch.Generator) -> SplitTensors:
    records = [ImageRecord(f"{name}_{i}.jpg", name, (f"{name} image {i} .", f"a photo of {name} {i} ."))
               for i in range(n)]
    captions = [c for r in records for c in r.captions]
    caption_image = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    return SplitTensors(records, images, tok(captions), caption_image, captions)


@pytest.fixture(scope="module")
def bundle(tiny_clip):
    tok = tokenizer_for("osdpm-tiny-vit")
    pre = preprocess_config(tiny_clip)
    gen = torch.Generator().manual_seed(0)
    splits = [_split(s, n, pre["image_size"], tok, gen) for s, n in (("train", N_TRAIN), ("val", N_VAL),
                                                                      ("test", N_TEST))]
    prior = torch.rand(N_TRAIN, len(lexicon.CATEGORY_NAMES), generator=gen)   # every row different
    return Bundle(*splits, Normalizer(pre["mean"], pre["std"]), prior)


def config(variant: str = "clip", epochs: int = 2, **kw) -> TrainConfig:
    return TrainConfig(variant=variant, epochs=epochs, batch_size=BATCH, lr=1e-3, module_lr=1e-3, warmup_frac=0.0,
                       augment=False, progress=False, stage_embeddings=False, threads=1, **kw)


class FakeEncoded(Encoded):
    """Stands in for an encoded split: ``metrics`` returns the Rsum it was given (``save`` is Encoded's)."""

    def __init__(self, rsum: float, n_images: int, n_captions: int):
        self.rsum = rsum
        self.images = np.zeros((n_images, 4), np.float32)
        self.texts = np.zeros((n_captions, 4), np.float32)
        self.caption_image = np.zeros(n_captions, np.int64)

    def metrics(self, ties: str = "expected") -> dict:
        return {"rsum": self.rsum, "mr": self.rsum / 6}


TEST_RSUM = 123.0


@pytest.fixture
def scripted_encoder(monkeypatch):
    """Replaces ``train.encode_split``: records (split name, model state) of every call and answers validation
    calls with the next of the given Rsum values (test calls with ``TEST_RSUM``)."""
    calls = []

    def install(val_rsums):
        it = iter(val_rsums)

        def fake(model, split, normalizer, cfg, device, amp, ratios=None):
            names = {r.split for r in split.records}
            assert len(names) == 1
            name = names.pop()
            calls.append((name, {k: v.detach().clone() for k, v in model.state_dict().items()}))
            rsum = next(it) if name == "val" else TEST_RSUM
            return FakeEncoded(rsum, len(split.records), len(split.captions))

        monkeypatch.setattr(train_mod, "encode_split", fake)
        return calls

    return install


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("val_rsums, best_epoch", [
    ([10.0, 30.0, 50.0, 50.0, 20.0], 2),     # a tie between epochs 2 and 3: the first is kept
    ([40.0, 40.0, 10.0], 0),                 # the starting weights tie with epoch 1: epoch 0 is kept
])
def test_selection_uses_validation_every_epoch_and_first_maximum(bundle, tmp_path, scripted_encoder, val_rsums,
                                                                  best_epoch):
    calls = scripted_encoder(val_rsums)
    epochs = len(val_rsums) - 1
    cfg = config(epochs=epochs)
    res = train(cfg, tmp_path, tmp_path / "run", bundle=bundle)
    # validation after every epoch (and before the first), then test exactly once, after training
    assert [name for name, _ in calls] == ["val"] * (epochs + 1) + ["test"]
    assert res["best_epoch"] == best_epoch
    assert res["best_val_rsum"] == max(val_rsums)
    assert res["test"]["rsum"] == TEST_RSUM
    # the test split is encoded with the selected epoch's weights
    states = [state for _, state in calls]
    assert _same_state(states[-1], states[best_epoch])
    others = [e for e in range(epochs + 1) if val_rsums[e] != max(val_rsums) or e > best_epoch]
    assert others and not any(_same_state(states[-1], states[e]) for e in others)
    hist = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(hist) == epochs + 2 and "test" not in hist[0]
    train_s = [float(line.split(",")[hist[0].split(",").index("train_s")]) for line in hist[1:]]
    best = checkpoints.load(tmp_path / "run" / "best.pt")
    assert best["epoch"] == best_epoch and best["config"] == dataclasses.asdict(cfg)   # best.pt records its epoch
    assert (tmp_path / "run" / "val_encoded.npz").is_file()          # the selected epoch's validation encoding
    col = hist[0].split(",").index("pairs_per_s")                   # epoch 0 trains nothing; the others do
    pairs = [float(line.split(",")[col]) for line in hist[1:]]
    assert pairs[0] == 0.0 and all(p > 0 for p in pairs[1:]) and train_s[0] == 0.0
    assert (res["variant"], res["seed"], res["train_s"]) == ("clip", 0, round(sum(train_s), 2))


class RecordingStepper(train_mod.Stepper):
    """The real optimisation step, recording what each call receives (and each instance: ``made``)."""
    seen: list = []
    made: list = []
    losses: list = []
    gens: list = []

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        RecordingStepper.made.append(self)

    def __call__(self, images_u8, tokens, prior, gen):
        RecordingStepper.seen.append((images_u8.clone(), tokens.clone(), None if prior is None else prior.clone()))
        RecordingStepper.gens.append(gen)
        out = super().__call__(images_u8, tokens, prior, gen)
        RecordingStepper.losses.append({k: float(v) for k, v in out.items()})
        return out


def _rows(batch: torch.Tensor, table: torch.Tensor) -> list[int]:
    """Index in ``table`` of each row of ``batch`` (rows of ``table`` are distinct)."""
    flat, ref = batch.flatten(1), table.flatten(1)
    out = []
    for row in flat:
        hits = torch.nonzero((ref == row).all(dim=1)).flatten().tolist()
        assert len(hits) == 1, "a batch row that is not exactly one table row"
        out.append(hits[0])
    return out


def test_step_receives_each_images_own_prior_rows_and_captions(bundle, tmp_path, monkeypatch):
    RecordingStepper.seen, RecordingStepper.losses = [], []
    monkeypatch.setattr(train_mod, "Stepper", RecordingStepper)
    epochs = 2
    train(config("osdpm", epochs=epochs), tmp_path, tmp_path / "run", bundle=bundle)
    seen = RecordingStepper.seen
    # the history's losses are the means of the epoch's step losses; DAPN's share is read at every validation
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert hist.dapn_ratio[0] == 0.0 and (hist.dapn_ratio[1:] > 0).all()
    steps = N_TRAIN // BATCH
    for e in range(1, epochs + 1):
        for k in ("total", "contrastive", "osfcm"):
            mean = np.mean([loss[k] for loss in RecordingStepper.losses[(e - 1) * steps:e * steps]])
            assert hist[f"loss_{k}"][e] == pytest.approx(mean, rel=1e-5, abs=1e-7), (e, k)
    assert len(seen) == epochs * (N_TRAIN // BATCH)
    tr = bundle.train
    per_epoch = N_TRAIN // BATCH
    for e in range(epochs):      # every training image once per epoch
        idx = [i for imgs, _, _ in seen[e * per_epoch:(e + 1) * per_epoch] for i in _rows(imgs, tr.images)]
        assert sorted(idx) == list(range(N_TRAIN))
    for images, tokens, prior in seen:
        idx = _rows(images, tr.images)
        assert prior is not None and torch.equal(prior.cpu(), bundle.prior[idx])
        for b, i in enumerate(idx):   # the caption of each row is one of that image's captions
            own = tr.tokens[tr.caption_image == i]
            assert (own == tokens[b]).all(dim=1).any()


def test_one_process_steps_as_rank_0_of_1_over_the_whole_global_batch(bundle, tmp_path, monkeypatch):
    RecordingStepper.seen, RecordingStepper.made, RecordingStepper.gens = [], [], []
    monkeypatch.setattr(train_mod, "Stepper", RecordingStepper)
    train(config("clip", epochs=1), tmp_path, tmp_path / "run", bundle=bundle)
    (step,) = RecordingStepper.made
    assert (step.rank, step.world) == (0, 1)
    assert all(isinstance(g, torch.Generator) for g in RecordingStepper.gens)   # the run's generator reaches every step
    assert len({id(g) for g in RecordingStepper.gens}) == 1
    assert [len(imgs) for imgs, _, _ in RecordingStepper.seen] == [BATCH] * (N_TRAIN // BATCH)


def test_step_receives_each_caption_once_with_its_own_image_by_caption(bundle, tmp_path, monkeypatch):
    """``epoch_unit="caption"``: an epoch's steps hold every training caption once, each with its own image."""
    RecordingStepper.seen = []
    monkeypatch.setattr(train_mod, "Stepper", RecordingStepper)
    train(config("clip", epochs=1, epoch_unit="caption"), tmp_path, tmp_path / "run", bundle=bundle)
    tr = bundle.train
    caps, imgs = [], []
    for images, tokens, _ in RecordingStepper.seen:
        imgs += _rows(images, tr.images)
        caps += [torch.nonzero((tr.tokens == t).all(dim=1)).flatten().tolist() for t in tokens]
    assert len(caps) == len(tr.captions) == 2 * N_TRAIN
    # a caption's token row may repeat (none does here): each step row is one of the rows equal to it
    assert sorted(c[0] for c in caps) == list(range(len(tr.captions)))
    assert all(int(tr.caption_image[c[0]]) == i for c, i in zip(caps, imgs))


def test_bf16_precision_reaches_validation_the_test_and_each_step(bundle, tmp_path, scripted_encoder, monkeypatch):
    """``precision="bf16"`` (here on the CPU): validation and the single test evaluation encode under bf16 autocast,
    and every step runs its forward pass under it."""
    encoded_amp = []
    calls = scripted_encoder([10.0, 20.0, 10.0, 20.0])
    fake = train_mod.encode_split

    def spy(model, split, normalizer, cfg, device, amp, ratios=None):
        encoded_amp.append(amp)
        return fake(model, split, normalizer, cfg, device, amp, ratios)

    monkeypatch.setattr(train_mod, "encode_split", spy)
    RecordingStepper.made = []
    monkeypatch.setattr(train_mod, "Stepper", RecordingStepper)
    autocast = []
    original = train_mod.OSDPM.forward

    def forward(self, *a, **kw):
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(self, *a, **kw)

    monkeypatch.setattr(train_mod.OSDPM, "forward", forward)
    train(config("clip", epochs=1, precision="bf16", device="cpu"), tmp_path, tmp_path / "run", bundle=bundle)
    assert [name for name, _ in calls] == ["val", "val", "test"]
    assert encoded_amp == [torch.bfloat16] * 3
    assert RecordingStepper.made[0].amp == torch.bfloat16
    assert autocast == [(True, torch.bfloat16)] * (N_TRAIN // BATCH)
    autocast.clear()                                                  # fp32: no autocast in the step
    train(config("clip", epochs=1, precision="fp32", device="cpu"), tmp_path, tmp_path / "fp32", bundle=bundle)
    assert [on for on, _ in autocast] == [False] * (N_TRAIN // BATCH)


class GlobalRngStepper(RecordingStepper):
    """A step that also draws from torch's global generator (as a model with dropout would)."""

    def __call__(self, images_u8, tokens, prior, gen):
        torch.rand(7)
        return super().__call__(images_u8, tokens, prior, gen)


def test_epoch_order_and_captions_come_from_the_runs_own_generator(bundle, tmp_path, monkeypatch):
    """What each step receives depends on the run's seeded generator only: draws from torch's global generator
    between the steps (dropout, another library) change neither the order of the images nor their captions."""
    seen = {}
    for name, stepper in (("plain", RecordingStepper), ("global draws", GlobalRngStepper)):
        RecordingStepper.seen = []
        monkeypatch.setattr(train_mod, "Stepper", stepper)
        train(config("clip", epochs=2), tmp_path, tmp_path / name, bundle=bundle)
        seen[name] = [(imgs, toks) for imgs, toks, _ in RecordingStepper.seen]
    assert len(seen["plain"]) == 2 * (N_TRAIN // BATCH)
    for (a_img, a_tok), (b_img, b_tok) in zip(seen["plain"], seen["global draws"]):
        assert torch.equal(a_img, b_img) and torch.equal(a_tok, b_tok)


def test_step_receives_no_prior_without_osfcm(bundle, tmp_path, monkeypatch):
    RecordingStepper.seen = []
    monkeypatch.setattr(train_mod, "Stepper", RecordingStepper)
    train(config("clip", epochs=1), tmp_path, tmp_path / "run", bundle=dataclasses.replace(bundle, prior=None))
    assert RecordingStepper.seen and all(p is None for _, _, p in RecordingStepper.seen)


def test_epoch_size_and_batch_pairs_by_caption_and_by_image(bundle):
    """``epoch_unit="caption"``: an epoch runs over the captions, each batch entry is a caption and its own image;
    ``"image"``: over the images, one random caption of each.  A process's part of the global batch gets the same
    pairs as the same rows of the whole batch (every rank draws the whole batch's random numbers)."""
    tr = bundle.train
    by_caption, by_image = config(epoch_unit="caption"), config(epoch_unit="image")
    assert train_mod.epoch_size(by_caption, tr) == len(tr.captions) == 2 * N_TRAIN
    assert train_mod.epoch_size(by_image, tr) == N_TRAIN
    batch = torch.tensor([5, 0, 17, 3, 40, 41])
    idx, cap = train_mod.batch_pairs(by_caption, batch, tr.caption_index(), tr.caption_image, torch.Generator())
    assert torch.equal(cap, batch) and torch.equal(idx, tr.caption_image[batch])
    batch = batch[:4]
    whole = train_mod.batch_pairs(by_image, batch, tr.caption_index(), tr.caption_image,
                                  torch.Generator().manual_seed(1))
    part = train_mod.batch_pairs(by_image, batch, tr.caption_index(), tr.caption_image,
                                 torch.Generator().manual_seed(1), slice(1, 3))
    assert torch.equal(whole[0], batch) and torch.equal(tr.caption_image[whole[1]], batch)
    assert torch.equal(part[0], whole[0][1:3]) and torch.equal(part[1], whole[1][1:3])
    g = torch.Generator().manual_seed(2)                     # by image, every caption of an image gets drawn
    drawn = torch.cat([train_mod.batch_pairs(by_image, torch.arange(N_TRAIN), tr.caption_index(), tr.caption_image,
                                             g)[1] for _ in range(8)])
    assert set(drawn.tolist()) == set(range(len(tr.captions)))


@pytest.mark.parametrize("val_rsums, patience, epochs_run", [
    ([10.0, 30.0, 20.0, 25.0, 29.0, 40.0, 5.0], 3, 4),   # best at 1; epochs 2-4 do not beat it: stop before 5
    ([10.0, 30.0, 20.0, 25.0, 29.0, 40.0, 5.0], 4, 6),   # patience 4 reaches epoch 5's 40, then the cap
    ([10.0, 30.0, 30.0, 30.0], 2, 3),                    # a tie does not beat the best: stop after 2 more
    ([10.0, 20.0, 30.0], 0, 2),                          # patience 0: every epoch
])
def test_early_stopping_on_validation(bundle, tmp_path, scripted_encoder, val_rsums, patience, epochs_run):
    calls = scripted_encoder(val_rsums)
    cfg = config(epochs=len(val_rsums) - 1, patience=patience, score_test=False, purpose="tuning")
    res = train(cfg, tmp_path, tmp_path / "run", bundle=bundle)
    assert [name for name, _ in calls] == ["val"] * (epochs_run + 1)          # no test split, ever
    assert res["epochs_run"] == epochs_run and res["max_epochs"] == len(val_rsums) - 1
    seen = val_rsums[:epochs_run + 1]
    assert res["best_epoch"] == seen.index(max(seen)) and res["best_val_rsum"] == max(seen)
    assert res["val"]["rsum"] == max(seen) and "test" not in res
    run = tmp_path / "run"
    assert (run / "selection.json").is_file() and not (run / "test_metrics.json").exists()
    assert not (run / "test_encoded.npz").exists() and not (run / "embeddings.npz").exists()
    assert train(cfg, tmp_path, run, bundle=bundle) == res        # a finished run is reused as it is


def test_stop_early_rule():
    cfg = config(patience=2)
    assert [train_mod.stop_early(cfg, e, best_epoch=1) for e in range(1, 6)] == [False, False, False, True, True]
    assert not any(train_mod.stop_early(config(), e, 0) for e in range(1, 30))
    floor = config(patience=2, min_epochs=5)      # no stop before 5 epochs were trained, whatever the best
    assert [train_mod.stop_early(floor, e, best_epoch=1) for e in range(1, 8)] == [False] * 5 + [True, True]


def test_tuning_and_design_runs_cannot_score_test():
    for purpose in ("tuning", "design"):
        with pytest.raises(ValueError, match=f"a {purpose} run scores no test split: set score_test=False"):
            config(purpose=purpose)
    with pytest.raises(ValueError, match="unknown purpose 'tune'"):
        config(purpose="tune", score_test=False)
    with pytest.raises(ValueError, match="patience and min_epochs must be >= 0"):
        config(patience=-1)
    # neutral at their defaults: a book run keeps its identity; the study's options change it
    assert config().key() == config(patience=0, score_test=True, purpose="book").key()
    assert len({config().key(), config(patience=3).key(), config(score_test=False).key(),
                config(purpose="study", score_test=False).key()}) == 4

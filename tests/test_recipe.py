"""The real-data recipe: epoch unit, crop and RandAugment options, the frozen and finetune profiles, the validation
carve-out for data without a val split and the final retrain on train+val."""

import dataclasses
import hashlib
import json

import pandas as pd
import pytest
import torch

from osdpm_lib import profiles, synth
from osdpm_lib.cache import (RAND_AUGMENT_OPS, SplitTensors, _rand_augment_op, augment, rand_augment,
                             random_resized_crop, recipe_augment)
from osdpm_lib.data import Annotations, ImageRecord, load, merge_val, with_val_split
from osdpm_lib.train import (_KEY_NEUTRAL, FROZEN_TRAINABLE, FULL_DIR, TrainConfig, batch_pairs, build_model,
                             epoch_size, train)


# ------------------------------------------------------------------------------------------ carve-out
def _annotations(n_train=50, n_test=10, val=0) -> Annotations:
    recs = [ImageRecord(f"scene_{i}.jpg", "train", (f"caption {i}",)) for i in range(n_train)]
    recs += [ImageRecord(f"scene_{n_train + i}.jpg", "val", ("v",)) for i in range(val)]
    recs += [ImageRecord(f"scene_{n_train + val + i}.jpg", "test", ("t",)) for i in range(n_test)]
    return Annotations("karpathy", "dataset_x.json", recs)


def _names(ann, split):
    return {r.filename for r in ann.split(split)}


def test_carve_out_is_seeded_disjoint_and_keeps_test():
    ann = _annotations()
    a, b, other = with_val_split(ann, 0.2, 0), with_val_split(ann, 0.2, 0), with_val_split(ann, 0.2, 1)
    assert a.images == b.images                                   # deterministic per seed
    assert _names(a, "val") != _names(other, "val")               # another seed, another carve-out
    assert len(a.split("val")) == 10 and len(a.split("train")) == 40
    assert _names(a, "train") | _names(a, "val") == _names(ann, "train")
    assert not _names(a, "train") & _names(a, "val") and not _names(a, "val") & _names(a, "test")
    assert a.split("test") == ann.split("test")
    assert [r.filename for r in a.images] == [r.filename for r in ann.images]      # file order kept
    assert merge_val(a).split("train") == ann.split("train")                        # the retrain's train+val


def test_carve_out_changes_nothing_at_zero_and_refuses_an_own_val_split():
    ann = _annotations(val=5)
    assert with_val_split(ann, 0.0, 3) is ann
    with pytest.raises(ValueError, match="dataset_x.json: has a val split of its own"):
        with_val_split(ann, 0.1, 0)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        TrainConfig(val_fraction=1.0)


# ------------------------------------------------------------------------------------------ epoch unit
def _split(counts) -> SplitTensors:
    records = [ImageRecord(f"i{i}.jpg", "train", tuple(f"c{i}.{j}" for j in range(c))) for i, c in enumerate(counts)]
    caption_image = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)])
    return SplitTensors(records, torch.zeros(len(counts), 3, 2, 2, dtype=torch.uint8),
                        torch.zeros(len(caption_image), 1, dtype=torch.long), caption_image,
                        [c for r in records for c in r.captions])


def test_epoch_size_counts_images_or_captions():
    split = _split([5, 3, 5, 1])
    assert epoch_size(TrainConfig(), split) == 4
    assert epoch_size(TrainConfig(epoch_unit="caption"), split) == 14
    with pytest.raises(ValueError, match="epoch_unit"):
        TrainConfig(epoch_unit="pairs")


def test_finetune_profile_is_about_80_caption_epochs_at_batch_214():
    """RSICD's train split (8,734 images x 5 captions): the profile's steps, next to HarMA's recipe
    (80 epochs over 43,670 pairs at batch 214) and the earlier 15 image-epochs at batch 128 (1,020 steps)."""
    cfg = profiles.train_config("finetune", "clip", 0)
    n = epoch_size(cfg, _split([5] * 8734))
    steps = n // cfg.batch_size * cfg.epochs
    assert steps == 43670 // 214 * 80
    assert steps * cfg.batch_size / n > 75                        # caption-epochs, as the field counts them
    assert steps > 10 * (8734 // 128 * 15)


def test_caption_epoch_goes_over_every_caption_once_and_image_epoch_is_unchanged():
    split = _split([5, 3, 5, 1, 2])
    index = split.caption_index()
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(epoch_size(TrainConfig(epoch_unit="caption"), split), generator=gen)
    imgs, caps = zip(*(batch_pairs(TrainConfig(epoch_unit="caption"), perm[s:s + 4], index, split.caption_image, gen)
                       for s in range(0, len(perm), 4)))
    caps, imgs = torch.cat(caps), torch.cat(imgs)
    assert sorted(caps.tolist()) == list(range(16))
    assert torch.equal(split.caption_image[caps], imgs)
    # image unit: the same draws as the code it replaced (one random caption per image)
    order, start, count = index
    chosen = torch.tensor([4, 0, 2])
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    idx, cap = batch_pairs(TrainConfig(), chosen, index, split.caption_image, g1)
    pick = (torch.rand(len(chosen), generator=g2) * count[chosen]).long()
    assert torch.equal(idx, chosen) and torch.equal(cap, order[start[chosen] + pick])
    assert torch.equal(split.caption_image[cap], idx)


def test_new_fields_at_their_defaults_keep_the_config_key():
    """A run folder made before the recipe's fields existed keeps its identity (``config_key``)."""
    cfg = profiles.train_config("ci", "clip", 2)   # osdpm keys also hold the lexicon
    old = {k: v for k, v in dataclasses.asdict(cfg).items()
           if k not in _KEY_NEUTRAL and k not in ("progress", "checkpoint_every", "stage_embeddings", "retrain_full")}
    assert cfg.key() == hashlib.sha1(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    assert dataclasses.replace(cfg, retrain_full=True).key() == cfg.key()     # the selected run is the same
    for change in ({"epoch_unit": "caption"}, {"crop_scale": (0.5, 1.0)}, {"rand_augment": 2}, {"val_fraction": 0.1}):
        assert dataclasses.replace(cfg, **change).key() != cfg.key(), change
    assert TrainConfig(crop_scale=[0.5, 1]).key() == TrainConfig(crop_scale=(0.5, 1.0)).key()   # as config.json reads


# ------------------------------------------------------------------------------------------ augmentation
@pytest.fixture()
def batch():
    return torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_default_augmentation_is_unchanged(batch):
    """``recipe_augment`` at the defaults returns its input and draws nothing: ``augment`` alone, as before."""
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert recipe_augment(batch, g) is batch
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("op", ["crop", "rand_augment"])
def test_augmentation_options_are_seeded_uint8_batches(batch, op):
    fn = {"crop": lambda x, g: random_resized_crop(x, g, (0.3, 1.0)),
          "rand_augment": lambda x, g: rand_augment(x, g, 2, 9)}[op]
    a = fn(batch, torch.Generator().manual_seed(3))
    assert a.shape == batch.shape and a.dtype == torch.uint8
    assert torch.equal(a, fn(batch, torch.Generator().manual_seed(3)))              # same generator, same batch
    assert not torch.equal(a, fn(batch, torch.Generator().manual_seed(4)))          # the generator decides
    assert (a != batch).flatten(1).any(1).sum() >= 3                                # most images change


def test_crop_of_the_whole_image_is_the_image_and_a_crop_is_a_zoom():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(3, 3, 4, 4).contiguous() * 10
    assert torch.equal(random_resized_crop(x, torch.Generator(), (1.0, 1.0), (1.0, 1.0)), x)
    y = random_resized_crop(x, torch.Generator().manual_seed(0), (0.25, 0.25), (1.0, 1.0))   # a 2x2 box, upscaled
    for img in y:     # x is a linear ramp: a box of half the side spans half its range (bilinear sampling)
        assert 0 < int(img.max()) - int(img.min()) <= (int(x.max()) - int(x.min())) / 2


def test_every_rand_augment_op_runs(batch):
    assert RAND_AUGMENT_OPS[0] == "identity" and len(RAND_AUGMENT_OPS) == 10
    batch = batch // 2 + 40       # low contrast: autocontrast and equalize have something to do
    for name in RAND_AUGMENT_OPS[1:]:
        out = _rand_augment_op(batch, name, 7, -1.0)
        assert out.shape == batch.shape and out.dtype == torch.uint8, name
        assert not torch.equal(out, batch), name


# ------------------------------------------------------------------------------------------ profiles
def test_frozen_profile_freezes_the_backbone():
    cfg = profiles.train_config("frozen", "osdpm", 0)
    assert cfg.freeze_backbone and cfg.epoch_unit == "caption"
    assert {k: v for k, v in profiles.get("frozen").items() if k not in ("freeze_backbone", "lr", "epochs")} == \
        {k: v for k, v in profiles.get("finetune").items() if k not in ("lr", "epochs")}
    model, _, _ = build_model(cfg)
    trainable = {n for n, p in model.clip.named_parameters() if p.requires_grad}
    assert trainable and all(any(n == k or n.startswith(k) for k in FROZEN_TRAINABLE) for n in trainable)


# ------------------------------------------------------------------------------------------ retrain on train+val
@pytest.fixture(scope="module")
def no_val_dir(tmp_path_factory):
    """The embedded benchmark with its val images relabelled train: the layout of RSITMD's json."""
    d = tmp_path_factory.mktemp("noval")
    js = synth.generate(d, n_images=80, seed=4, n_val=10, n_test=20)
    data = json.loads(js.read_text())
    for im in data["images"]:
        im["split"] = "train" if im["split"] == "val" else im["split"]
    js.write_text(json.dumps(data))
    return d


def test_data_without_val_needs_a_carve_out(no_val_dir, tmp_path):
    cfg = profiles.train_config("ci", "clip", 0, epochs=1, progress=False)
    with pytest.raises(ValueError, match="split 'val' is empty.*val_fraction"):
        train(cfg, no_val_dir, tmp_path / "run")


def test_carve_out_and_final_retrain(no_val_dir, tmp_path):
    cfg = profiles.train_config("ci", "clip", 1, epochs=2, batch_size=16, progress=False, val_fraction=0.2,
                                retrain_full=True, epoch_unit="caption", crop_scale=(0.5, 1.0), rand_augment=1,
                                stage_embeddings=False)
    res = train(cfg, no_val_dir, tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["val_fraction"] == 0.2 and len(stored["val_carved"]) == round(0.2 * 60)
    ann = load(no_val_dir)
    assert set(stored["val_carved"]) <= _names(ann, "train")
    assert set(stored["val_carved"]) == _names(with_val_split(ann, 0.2, 1), "val")
    full = tmp_path / "run" / FULL_DIR
    assert res["retrain_full"] == json.loads((full / "test_metrics.json").read_text())
    assert res["retrain_full"]["best_epoch"] == res["best_epoch"]          # retrained to the selected epoch
    full_cfg = json.loads((full / "config.json").read_text())
    assert full_cfg["epochs"] == res["best_epoch"] and "train+val" in full_cfg["trained_on"]
    hist = pd.read_csv(full / "metrics.csv")
    assert list(hist.epoch) == list(range(res["best_epoch"] + 1))
    assert not any(c.startswith("val_") for c in hist.columns)             # nothing left to validate on
    assert (full / "best.pt").exists() and (full / "test_encoded.npz").exists()
    assert train(cfg, no_val_dir, tmp_path / "run") == res                 # both reused

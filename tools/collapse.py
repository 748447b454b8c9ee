"""Why two baseline rows collapse: training steps of a `full`-profile baseline (seed 0) on the embedded benchmark's
training split, with what each collapse is made of printed along the way.  The runs behind the CAMP and HVSA
paragraphs of docs/BASELINE_STUDY.md.  Needs ``make book``'s ``data/embedded``.

    python tools/collapse.py camp SYSTEM HARDEST_FROM LR STEPS
    python tools/collapse.py hvsa LR EPOCHS

``camp``: SYSTEM ``CAMP-triplet`` or ``CAMP-bce``; steps before ``HARDEST_FROM`` train on all negatives (the code's
``max_violation: False``), later ones on the hardest (its configs' ``max_violation: True``); every 5 steps: the
loss, the spread (std) of the batch score matrix, the mean matching minus mean non-matching score ("gap") and the
share of active units in the score MLP.  Reads no validation or test image.

``hvsa``: per epoch, the means over its steps of the curriculum's alignment loss, the uniformity term, the weight
the code's auto-weighting MLP gives the alignment loss, the gap, and the validation Rsum after the epoch.
"""

from __future__ import annotations

import sys

import torch

from osdpm_lib.baselines import run
from osdpm_lib.baselines.hvsa import difficulty_weighted_loss, uniformity
from osdpm_lib.baselines.profiles import baseline_config
from osdpm_lib.baselines.scoring import same_image
from osdpm_lib.train import batch_pairs, epoch_size


def setup(system: str, lr: float, splits=("train",)):
    cfg = baseline_config("full", system, 0, lr=lr)
    data = run.prepare("data/embedded", cfg.image_size)
    feats = run.frozen_features(cfg, data, {}, splits=splits)
    torch.manual_seed(0)
    model = run.build_system(cfg, run.build_backbone(cfg), len(data.vocab))
    return cfg, data, feats, model, torch.optim.Adam(model.parameters(), lr=cfg.lr)


def batches(cfg, data, feats, gen: torch.Generator, n_steps: int | None = None):
    """``(idx, img features, tokens)`` of one epoch's batches (or its first ``n_steps``), as the runs draw them."""
    train = data.bundle.train
    index, n = train.caption_index(), epoch_size(cfg, train)
    perm = torch.randperm(n, generator=gen)
    for step in range(n // cfg.batch_size if n_steps is None else n_steps):
        idx, cap = batch_pairs(cfg, perm[step * cfg.batch_size:(step + 1) * cfg.batch_size], index,
                               train.caption_image, gen)
        yield idx, tuple(m[idx] for m in feats["train"]), run._trim(train.tokens[cap])


def step(model, optim, scores, loss):
    optim.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
    optim.step()
    s, n = scores.detach(), len(scores)
    return float(s.diag().mean() - (s.sum() - s.diag().sum()) / (n * (n - 1)))      # matching - non-matching


def camp(system: str, hardest_from: int, lr: float, n_steps: int):
    cfg, data, feats, model, optim = setup(system, lr)
    active = {}
    model.fc_out[1].register_forward_hook(lambda m, i, o: active.__setitem__("share", float((o > 0).float().mean())))
    for k, (idx, img, tokens) in enumerate(batches(cfg, data, feats, torch.Generator().manual_seed(0), n_steps)):
        s = model.score(model.encode_image(*img), model.encode_text(tokens))
        pos = same_image(idx)
        loss = model.loss(s, max_violation=k >= hardest_from, **({"positives": pos} if pos is not None else {}))
        gap = step(model, optim, s, loss)
        if k % 5 == 0 or k == n_steps - 1:
            print(f"{system} step {k} loss {loss.item():.3f} spread {s.std().item():.4f} gap {gap:+.4f} "
                  f"active {active['share']:.3f}", flush=True)


def hvsa(lr: float, epochs: int):
    cfg, data, feats, model, optim = setup("HVSA", lr, splits=("train", "val"))
    gen = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        model.train()
        rows = []
        for idx, img, tokens in batches(cfg, data, feats, gen):
            s = model.score(model.encode_image(*img), model.encode_text(tokens))
            pos = same_image(idx)
            align = float(difficulty_weighted_loss(s.detach(), positives=pos))
            unif = float(uniformity(model._images.detach()))
            with torch.no_grad():
                w_align = float(model.weight_loss.linear(torch.tensor([align, unif])).softmax(0)[0])
            rows.append((align, unif, w_align, step(model, optim, s, model.loss(s, positives=pos))))
        m = torch.tensor(rows).mean(0)
        model.eval()
        val, _ = run.evaluate(model, lambda i: tuple(x[i] for x in feats["val"]), data.bundle.val, cfg)
        print(f"HVSA lr {lr} epoch {epoch}: align {m[0]:.4f} unif {m[1]:.4f} w_align {m[2]:.3f} gap {m[3]:+.4f} "
              f"val_rsum {val['plain']['rsum']:.2f}", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "camp":
        camp(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif mode == "hvsa":
        hvsa(float(args[0]), int(args[1]))
    else:
        sys.exit(f"unknown mode {mode!r}: camp or hvsa")

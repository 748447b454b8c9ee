"""Why CAMP trains on all negatives here: a few training steps of a CAMP row on the embedded benchmark's training
split (the `full` baseline profile's config, seed 0), printing every 5 steps the loss, the spread of the batch score
matrix, the mean matching score minus the mean non-matching one, and the share of active units in the score MLP.

    python tools/camp_collapse.py SYSTEM HARDEST_FROM LR STEPS

SYSTEM ``CAMP-triplet`` or ``CAMP-bce``; steps before ``HARDEST_FROM`` train on all negatives (the code's
``max_violation: False``), later ones on the hardest (its configs' ``max_violation: True``).  Needs ``make book``'s
``data/embedded``.  Reads no validation or test images.  The runs behind docs/BASELINE_STUDY.md's CAMP table.
"""
import sys

import torch

from osdpm_lib.baselines import run
from osdpm_lib.baselines.profiles import baseline_config
from osdpm_lib.baselines.scoring import same_image
from osdpm_lib.train import epoch_size, batch_pairs
system, hardest_from, lr, nsteps = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
cfg = baseline_config("full", system, 0, lr=lr)
data = run.prepare("data/embedded", cfg.image_size)
feats = run.frozen_features(cfg, data, {})
torch.manual_seed(0)
model = run.build_system(cfg, run.build_backbone(cfg), len(data.vocab))
opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
train = data.bundle.train; index = train.caption_index(); gen = torch.Generator().manual_seed(0)
perm = torch.randperm(epoch_size(cfg, train), generator=gen)
hid = {}
model.fc_out[1].register_forward_hook(lambda m, i, o: hid.__setitem__("act", (o > 0).float().mean().item()))
maps = feats["train"]
for step in range(nsteps):
    idx, cap = batch_pairs(cfg, perm[step*64:(step+1)*64], index, train.caption_image, gen)
    img = model.encode_image(*(m[idx] for m in maps)); txt = model.encode_text(run._trim(train.tokens[cap]))
    s = model.score(img, txt)
    pos = same_image(idx)
    loss = model.loss(s, max_violation=step >= hardest_from, **({"positives": pos} if pos is not None else {}))
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0); opt.step()
    if step % 5 == 0 or step == nsteps - 1:
        d = s.diag().mean().item(); off = (s.sum() - s.diag().sum()).item() / (64*63)
        print(f"{system} step {step} loss {loss.item():.3f} s_std {s.std().item():.4f} diag-off {d-off:+.4f} relu_active {hid['act']:.3f}", flush=True)

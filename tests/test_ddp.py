"""DDP correctness of the training objective on CPU (gloo, 2 processes).

One process on the full global batch (``OSDPMLoss(world_size=1)``) against two ranks that each take
their half of the same batch, compute ``OSDPMLoss(rank, world_size=2)`` (open_clip ``ClipLoss`` with
``local_loss`` and ``gather_with_grad``) and back-propagate through ``DistributedDataParallel``.

What holds exactly (up to float summation order):

* the **mean over ranks** of each rank's loss equals the single-process loss (contrastive: each rank
  averages cross-entropy over its own rows against the gathered features; OSFCM: each rank divides
  its sum by the global number of images with a prior, times ``world_size``);
* the gradients DDP leaves in the parameters (all-reduced, i.e. averaged over ranks) equal the
  single-process gradients of the mean loss — the all-gather's backward sums the other ranks'
  gradients into each rank's features.

The prior has rows of zeros distributed unevenly over the two halves (images naming no category), the
case where a per-rank mean of the OSFCM term would differ from the global mean.

Runs as ``pytest tests/test_ddp.py`` or ``python tests/test_ddp.py`` (no pytest needed).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

WORLD = 2
GLOBAL_BATCH = 8
MODEL = "osdpm-tiny-vit"
# fork: the workers inherit the imported torch/open_clip (a spawned worker re-imports them, which
# costs 10-20 s on a busy 2-core machine); the parent runs no torch parallel work before forking.
START_METHOD = os.environ.get("OSDPM_DDP_START_METHOD", "fork" if sys.platform == "linux" else "spawn")
if sys.platform == "linux":   # gloo on loopback: no dependence on how the host name resolves
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(zero_rows: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """A fixed global batch: normalised-looking images, token ids, category priors."""
    from osdpm_lib import lexicon

    g = torch.Generator().manual_seed(1234)
    images = torch.randn(GLOBAL_BATCH, 3, 64, 64, generator=g)
    tokens = torch.randint(1, 49407, (GLOBAL_BATCH, 24), generator=g)
    prior = torch.rand(GLOBAL_BATCH, len(lexicon.CATEGORY_NAMES), generator=g)
    prior[prior < 0.6] = 0.0                       # sparse, like caption-noun frequencies
    prior[:, 0] += 0.1                             # every row has mass ...
    prior[list(zero_rows)] = 0.0                   # ... except these (no category named)
    return {"images": images, "tokens": tokens, "prior": prior}


def _model(variant: str):
    from osdpm_lib.train import TrainConfig, build_model

    model, _, _ = build_model(TrainConfig(variant=variant, model=MODEL, seed=0))
    model.train()
    return model


def _step(model, loss_fn, batch) -> dict[str, float]:
    out = model(batch["images"], batch["tokens"])
    losses = loss_fn(out, batch["prior"])
    losses["total"].backward()
    return {k: float(v.detach()) for k, v in losses.items()}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in model.named_parameters()}


SCENARIOS: dict[str, tuple[int, ...]] = {
    # images without a prior (zero rows) all on rank 0: 3 of its 4 rows -> uneven per-rank counts
    "uneven_priors": (0, 1, 2),
    # rank 0's whole half names no category: its OSFCM term is zero but keeps the graph
    "rank_without_priors": (0, 1, 2, 3),
}


def _worker(rank: int, world: int, port: int, out_dir: str, variant: str, lambda_osfcm: float) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from osdpm_lib.losses import OSDPMLoss

        for name, zero_rows in SCENARIOS.items():
            batch = _batch(zero_rows)
            n = GLOBAL_BATCH // world
            local = {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}
            model = _model(variant)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            loss_fn = OSDPMLoss(lambda_osfcm, rank=rank, world_size=world)
            losses = _step(ddp, loss_fn, local)
            torch.save({"losses": losses, "grads": _grads(model)}, Path(out_dir) / f"{name}_rank{rank}.pt")
            # a second iteration: DDP raises here if a parameter got no gradient in the first one
            model.zero_grad(set_to_none=True)
            _step(ddp, loss_fn, local)
    finally:
        dist.destroy_process_group()


def _single(variant: str, lambda_osfcm: float, zero_rows: tuple[int, ...]):
    from osdpm_lib.losses import OSDPMLoss

    torch.set_num_threads(1)
    model = _model(variant)
    losses = _step(model, OSDPMLoss(lambda_osfcm, rank=0, world_size=1), _batch(zero_rows))
    return losses, _grads(model)


def run_all(variant: str = "osdpm", lambda_osfcm: float = 1.0) -> dict[str, dict]:
    """Both sides for every scenario: ``{scenario: {"ranks": [...], "single": (losses, grads)}}``."""
    import osdpm_lib.losses  # noqa: F401  (imported before forking)
    import osdpm_lib.train  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(WORLD, _free_port(), tmp, variant, lambda_osfcm),
                           nprocs=WORLD, join=True, start_method=START_METHOD)
        ranks = {name: [torch.load(Path(tmp) / f"{name}_rank{r}.pt", weights_only=True) for r in range(WORLD)]
                 for name in SCENARIOS}
    return {name: {"ranks": ranks[name], "single": _single(variant, lambda_osfcm, zr)}
            for name, zr in SCENARIOS.items()}


def check(result: dict, atol: float = 1e-5) -> dict:
    """Assert the equalities for one scenario; returns a small report."""
    ranks = result["ranks"]
    ref_losses, ref_grads = result["single"]
    report = {"losses": {}, "max_abs_grad_diff": 0.0, "n_params": 0}
    for key, ref in ref_losses.items():
        mean = sum(r["losses"][key] for r in ranks) / WORLD
        report["losses"][key] = (ref, mean, [r["losses"][key] for r in ranks])
    for key, (ref, mean, per_rank) in report["losses"].items():
        assert abs(mean - ref) <= 1e-5 * max(1.0, abs(ref)), \
            f"{key}: mean over ranks {mean} (ranks {per_rank}) != single {ref}; all: {report['losses']}"
    for name, ref in ref_grads.items():
        got = [r["grads"][name] for r in ranks]
        assert ref is not None, f"{name}: no gradient in the single-process run"
        for r, g in enumerate(got):
            assert g is not None, f"{name}: no gradient on rank {r}"
        # DDP leaves the same averaged gradient on every rank
        assert torch.equal(got[0], got[1]), f"{name}: ranks disagree after all-reduce"
        diff = float((got[0] - ref).abs().max())
        report["max_abs_grad_diff"] = max(report["max_abs_grad_diff"], diff)
        report["n_params"] += 1
        assert torch.allclose(got[0], ref, atol=atol, rtol=1e-4), f"{name}: DDP grad differs by {diff:.3g}"
    return report


_CACHE: dict = {}


def _results() -> dict:
    if not _CACHE:
        _CACHE.update(run_all("osdpm", 1.0))
    return _CACHE


def test_ddp_matches_single_process_uneven_priors():
    rep = check(_results()["uneven_priors"])
    assert rep["n_params"] > 10 and rep["losses"]["osfcm"][0] > 0


def test_ddp_matches_single_process_rank_without_priors():
    rep = check(_results()["rank_without_priors"])
    assert rep["losses"]["osfcm"][2][0] == 0.0   # rank 0's term is exactly zero


if __name__ == "__main__":
    for scenario, res in run_all("osdpm", 1.0).items():
        rep = check(res)
        print(f"{scenario}: params {rep['n_params']}, max |grad diff| {rep['max_abs_grad_diff']:.2e}")
        for k, (ref, mean, per_rank) in rep["losses"].items():
            print(f"  {k:12s} single {ref:.6f}  mean over ranks {mean:.6f}  per rank {[round(x, 6) for x in per_rank]}")
    print("DDP check passed")

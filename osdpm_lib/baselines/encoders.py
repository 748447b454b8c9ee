"""The encoders every baseline shares: a torchvision ResNet whose last feature grid serves as "regions", and word
embeddings + a bidirectional GRU over a vocabulary built from the training captions.

Grid layer: the deepest ResNet stage whose grid is at least :data:`MIN_GRID` cells a side.  On the embedded
benchmark's 64 px images that is ``layer3`` (4 x 4 cells of 256 channels; ``layer4`` would be 2 x 2); on RSICD /
RSITMD at 224 px it is ``layer4`` (7 x 7 cells of 512 channels).  The backbone returns ``(low, high)``: the stage
before the grid stage and the grid stage.  With ``all_stages=True`` it returns every stage it computed instead
(``layer1`` to the grid stage), which AMFMN's and GaLR's MVSA join two by two (``layer1 + layer2``,
``layer3 + layer4``, as their ``ExtractFeature``); where the grid stage is ``layer3`` (64 px) the ResNet's
``layer4`` is not part of the backbone (nor of the shipped ``synthpre`` weights, which end at ``layer3``): it is
kept aside as :attr:`GridBackbone.next_stage` (torchvision's weights if given, else its initialisation) for a
system that adds it as its own trained module.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data import tokenize

MIN_GRID = 4
STAGES = ("layer1", "layer2", "layer3", "layer4")
STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD, UNK = 0, 1


L2_EPS = 1e-8


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = L2_EPS) -> torch.Tensor:
    return x / (x.norm(dim=dim, keepdim=True) + eps)


def grid_stage(image_size: int) -> str:
    """The deepest ResNet stage whose grid is at least :data:`MIN_GRID` cells a side at ``image_size`` px."""
    ok = [s for s in STAGES if image_size // STRIDES[s] >= MIN_GRID]
    if not ok:
        raise ValueError(f"images of {image_size} px give no ResNet grid of {MIN_GRID} x {MIN_GRID} cells")
    return ok[-1]


def shipped_weights(arch: str, tag: str | None):
    """The file of the library's own weights ``tag`` for ``arch`` (``weights/<arch>_<tag>.safetensors``, e.g.
    ``resnet18_synthpre`` made by :mod:`.pretrain`), or None when ``tag`` names none (a torchvision weights name)."""
    from ..models import bundled_weights

    return bundled_weights(arch, tag) if _is_shipped_tag(tag) else None


def _is_shipped_tag(tag: str | None) -> bool:
    """Lower-case tags name the library's own weights (``synthpre``), upper-case ones torchvision's."""
    return bool(tag) and tag.islower()


class GridBackbone(nn.Module):
    """A torchvision ResNet cut after the grid stage; returns ``(low, high)`` feature maps (the stage before the
    grid stage and the grid stage) of ImageNet-normalised images.  ``weights``: a torchvision weights name
    (``"IMAGENET1K_V1"``; downloads once), the tag of weights shipped with the library (``"synthpre"``: pretrained
    offline on the book's pretraining corpus, :mod:`.pretrain`) or None (random initialisation)."""

    def __init__(self, arch: str = "resnet18", image_size: int = 64, weights: str | None = None):
        super().__init__()
        import torchvision

        shipped, path = _is_shipped_tag(weights), shipped_weights(arch, weights)
        if shipped and path is None:
            from ..models import weights_file
            raise FileNotFoundError(f"{weights_file(arch, weights)}: no shipped {arch} weights {weights!r} "
                                    "(`make pretrain-resnet` builds the synthpre ones)")
        net = getattr(torchvision.models, arch)(weights=None if shipped else weights)
        self.stage = grid_stage(image_size)
        self.image_size = image_size
        last = STAGES.index(self.stage)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList(getattr(net, s) for s in STAGES[:last + 1])
        # the stage after the grid stage (None at the last one): not a submodule (not in the state dict, not moved,
        # not trained with the backbone); a system that uses it takes a copy (build_system)
        self._next = [getattr(net, STAGES[last + 1]) if last + 1 < len(STAGES) else None]
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, 3, image_size, image_size), all_stages=True)
        low, high = _low_high(feats)
        self.low_channels, self.channels = low.shape[1], high.shape[1]
        self.low_grid, self.grid = low.shape[-1], high.shape[-1]
        self.stage_channels = tuple(f.shape[1] for f in feats)     # layer1 .. grid stage
        self.stage_grids = tuple(f.shape[-1] for f in feats)
        if shipped:
            self._load_shipped(path)

    @property
    def next_stage(self) -> nn.Module | None:
        """The ResNet stage after the grid stage (``layer4`` at 64 px), outside the backbone: torchvision's weights
        when the backbone was made with them, else its random initialisation (the shipped ``synthpre`` weights end
        at the grid stage); None when the grid stage is ``layer4``."""
        return self._next[0]

    def _load_shipped(self, path) -> None:
        from .. import checkpoints

        state = checkpoints.load(path)
        if set(state) != set(self.state_dict()):
            n_stages = len({k.split(".")[1] for k in state if k.startswith("stages.")})
            raise checkpoints.CheckpointError(
                f"{path}: holds the ResNet up to {STAGES[max(n_stages, 1) - 1]}, but the grid stage at "
                f"{self.image_size} px is {self.stage} (the shipped weights are for 64 px images; at 224 px use "
                "torchvision's IMAGENET1K_V1)")
        checkpoints.load_into(self, {k: v.float() for k, v in state.items()}, path, "grid backbone")

    def forward(self, x: torch.Tensor, all_stages: bool = False) -> tuple[torch.Tensor, ...]:
        """``(low, high)``; ``all_stages``: every stage's map instead, ``layer1`` to the grid stage (the same
        operations: ``low, high`` are its last two)."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return tuple(feats) if all_stages else _low_high(feats)


def _low_high(feats) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage before the grid stage and the grid stage, of a list of stage maps."""
    return (feats[-2] if len(feats) > 1 else feats[-1]), feats[-1]


class Vocab:
    """Words of the training captions (Karpathy tokens, :func:`osdpm_lib.data.tokenize`) with ``<pad>`` = 0 and
    ``<unk>`` = 1.  Called on captions it returns padded ids ``long [M, L]`` (L = the longest caption, at most
    ``max_len``), so it serves as the tokenizer of :func:`osdpm_lib.train.load_bundle`."""

    def __init__(self, captions, min_count: int = 1, max_len: int = 32):
        counts = Counter(w for c in captions for w in tokenize(c))
        self.words = ["<pad>", "<unk>", *sorted(w for w, n in counts.items() if n >= min_count)]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_len = max_len
        # cache.tokenize keys its memo on the tokenizer's name: the vocabulary's digest
        self.tokenizer = self
        self.name_or_path = "vocab:" + hashlib.sha1("\n".join(self.words).encode()).hexdigest()[:16]
        self.context_length = max_len

    def __len__(self) -> int:
        return len(self.words)

    def __call__(self, captions) -> torch.Tensor:
        ids = [[self.index.get(w, UNK) for w in tokenize(c)][:self.max_len] or [UNK] for c in captions]
        out = torch.full((len(ids), max((len(i) for i in ids), default=1)), PAD, dtype=torch.long)
        for row, i in enumerate(ids):
            out[row, :len(i)] = torch.tensor(i)
        return out


class TextEncoder(nn.Module):
    """Word embeddings + GRU (bidirectional by default, the two directions averaged as in SCAN).  Returns
    ``(words [B, L, d], mask [B, L], sentence [B, d])``; the sentence is the mean of the last hidden states
    (float32 also under autocast)."""

    def __init__(self, vocab_size: int, word_dim: int = 128, dim: int = 256, bidirectional: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        self.gru = nn.GRU(word_dim, dim, batch_first=True, bidirectional=bidirectional)
        self.dim = dim

    def forward(self, tokens: torch.Tensor):
        mask = tokens != PAD
        lengths = mask.sum(1).clamp(min=1)
        packed = pack_padded_sequence(self.embed(tokens).float(), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        # the GRU runs in fp32 under any autocast: cuDNN's RNN takes bf16 only from cuDNN 9.13 on (on the CPU,
        # where no autocast is on, this changes nothing)
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            out, h = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        if self.gru.bidirectional:
            out = (out[..., :self.dim] + out[..., self.dim:]) / 2
        return out, mask, h.mean(0)


def cells(grid: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H*W, C]``: the grid cells as regions."""
    return grid.flatten(2).transpose(1, 2)


__all__ = ["GridBackbone", "TextEncoder", "Vocab", "cells", "grid_stage", "l2norm"]

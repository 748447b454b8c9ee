"""The paper's comparison systems (its Tables 1-2) as runnable baselines under the book's protocol.

Every system shares the encoders of :mod:`.encoders` (a torchvision ResNet whose grid cells serve as regions; word
embeddings + GRU over a vocabulary of the training captions) and is trained by :func:`.run.train_system` with the
book's protocol: the data set's train/val/test splits, the epoch selected on validation Rsum only, the test split
scored once, the metrics of :mod:`osdpm_lib.metrics` (ties: expected value).

:data:`SYSTEMS` maps the literature's row names (``literature/reported_results.csv``) to a model factory and to
what had to be replaced; :data:`OPEN` lists the systems not implemented yet ("reported only").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from .amfmn import AMFMN
from .galr import GaLR
from .scan import SCAN
from .scoring import Baseline, rerank, rerank_metrics, score_matrix, triplet_loss
from .vsepp import VSEPP

# What every system replaces (footnotes of the tables)
COMMON = ("ResNet-18 grid cells for image regions/features (offline: pretrained on the book's pretraining corpus "
          "for ImageNet, frozen; ImageNet weights where downloadable); word embeddings + GRU trained here for "
          "skip-thought / pretrained word vectors")


@dataclass(frozen=True)
class System:
    factory: object
    replaced: str
    rerank: bool = False
    extra: dict = field(default_factory=dict)


SYSTEMS: dict[str, System] = {
    "VSE++": System(VSEPP, "mean-pooled grid cells for the pooled CNN feature"),
    "SCAN_t2i": System(partial(SCAN, direction="t2i"),
                       "4x4 (64 px) or 7x7 (224 px) grid cells for 36 Faster R-CNN (bottom-up) regions"),
    "SCAN_i2t": System(partial(SCAN, direction="i2t"),
                       "4x4 (64 px) or 7x7 (224 px) grid cells for 36 Faster R-CNN (bottom-up) regions"),
    "AMFMN-soft": System(partial(AMFMN, guidance="soft"),
                         "guidance modules re-derived from the paper's text; VSE++'s triplet loss for the "
                         "dynamic-margin triplet loss"),
    "AMFMN-fusion": System(partial(AMFMN, guidance="fusion"),
                           "guidance modules re-derived from the paper's text; VSE++'s triplet loss for the "
                           "dynamic-margin triplet loss"),
    "AMFMN-sim": System(partial(AMFMN, guidance="sim"),
                        "guidance modules re-derived from the paper's text; VSE++'s triplet loss for the "
                        "dynamic-margin triplet loss"),
    "GaLR": System(GaLR, "grid cells + similarity adjacency GCN for Faster R-CNN objects + DREA; MIDF on one "
                         "token per branch; re-ranking with the code's K=30, Wp1=0.3, Wp2=1.1", rerank=True),
}

OPEN = ("CAMP-triplet", "CAMP-bce", "MTFN", "LW-MCR(b)", "LW-MCR(d)", "HVSA")

__all__ = ["Baseline", "COMMON", "OPEN", "SYSTEMS", "System", "rerank", "rerank_metrics", "score_matrix",
           "triplet_loss"]

"""VSE++ (Faghri et al., BMVC 2018): a global image vector and a GRU sentence vector in one space, cosine scores,
the hinge triplet loss on the hardest negative of each query (max violation), from the first epoch.

Image side as the original's ``EncoderImageFull`` (github.com/fartashf/vsepp, ``model.py``): the pooled CNN feature
is l2-normalised, projected by one fc layer and l2-normalised again.  Here the pooled feature is the mean of the
ResNet grid cells (VSE++ pools the CNN's last feature map; the AMFMN paper's remote-sensing row used a ResNet-18,
its Sec. V-C).  Text side as the original's ``EncoderText``: word embeddings learned here and the last hidden state of
a unidirectional GRU, l2-normalised.

:class:`VSE0` is the same model trained on the loss VSE++ improves on, the hinge summed over all negatives (the
paper's VSE0 baseline), every epoch."""

from __future__ import annotations

from torch import nn

from .encoders import TextEncoder, cells, l2norm
from .scoring import Baseline, triplet_loss


class VSEPP(Baseline):
    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128, **_):
        super().__init__()
        self.img_fc = nn.Linear(channels, dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=False)

    def encode_image(self, low, high):
        return (l2norm(self.img_fc(l2norm(cells(high).mean(1)))),)

    def encode_text(self, tokens):
        _, _, sent = self.text(tokens)
        return (l2norm(sent),)


class VSE0(VSEPP):
    """VSE++'s model on the sum of the hinges over all negatives (both directions), whatever ``max_violation``
    says: the loss that defines the system."""

    def loss(self, scores, max_violation: bool = True, positives=None):
        return triplet_loss(scores, self.margin, max_violation=False, positives=positives)

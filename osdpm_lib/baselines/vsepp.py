"""VSE++ (Faghri et al., BMVC 2018): a global image vector and a GRU sentence vector in one space, cosine scores,
the hinge triplet loss on the hardest negative of each query (max violation).

Here: the image vector is the mean of the ResNet grid cells projected to the joint space (VSE++ projects the
pooled ResNet feature); the sentence is the last hidden state of a unidirectional GRU over word embeddings
trained from scratch."""

from __future__ import annotations

from torch import nn

from .encoders import TextEncoder, cells, l2norm
from .scoring import Baseline


class VSEPP(Baseline):
    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128, **_):
        super().__init__()
        self.img_fc = nn.Linear(channels, dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=False)

    def encode_image(self, low, high):
        return (l2norm(self.img_fc(cells(high).mean(1))),)

    def encode_text(self, tokens):
        _, _, sent = self.text(tokens)
        return (l2norm(sent),)

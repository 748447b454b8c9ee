"""AMFMN (Yuan et al., TGRS 2022, "Exploring a fine-grained multiscale method for cross-modal remote sensing image
retrieval"; code: github.com/xiaoyuan1996/AMFMN, ``AMFMN/layers/AMFMN.py`` and ``AMFMN_Modules.py``): a
multiscale visual self-attention (MVSA) image vector ``v``, the caption's vector ``t`` guided by it (visual-guided
attention, VGA, in the paper's three variants), the cosine of ``v`` and the guided text, a hinge triplet loss.

What follows the original (class names of ``AMFMN_Modules.py``):

* ``ExtractFeature``: two ResNet stages per scale, joined by nearest upsampling and concatenation:
  ``lower = cat(layer1, up(layer2))``, ``higher = cat(layer3, up(layer4))``; the "solo" (global) feature is a linear
  map of the mean-pooled ``layer4``.
* ``VSA_Module`` (MVSA, Eqs. 14-19 and the mask): ``LF_conv`` (3x3, stride 4, no padding) and ``HF_conv`` (1x1)
  bring both scales to 3 channels on ``layer3``'s grid (``multiscale_input_channel: 3``), their concatenation plus
  the high scale's channel mean (Eq. 16), two 1x1 convolutions to one channel, one through a sigmoid, multiplied
  (Eqs. 17-19), flattened, a linear map and a sigmoid give the salient mask of the solo feature; ``Fv`` is the solo
  feature times the mask (not l2-normalised, as in AMFMN's code; GaLR's copy normalises it: ``normalize``).
* ``CrossAttention`` (VGA), the three variants with the paper's names:
  ``soft`` (Eq. 20, ``soft_att``): ``t_vg = sigmoid(linear(v)) * t``;
  ``fusion`` (Eqs. 21-22, ``fusion_att``): ``f = cat(v, t)``, ``t_vg = linear_2(f) * sigmoid(linear_1(f))``;
  ``sim`` (Eq. 25, ``similarity_att``): ``t_vg = sigmoid(S(f(v), f(t))) * f(t)`` with ``f(v)``, ``f(t)`` linear
  maps (Eqs. 23-24) and ``S`` the elementwise product ``f(v) * f(t)``, as the code computes it.  (The paper calls
  ``S`` a cosine similarity; a scalar gate would not change the cosine score, which would reduce to
  ``cos(v, f(t))``.)
* The score: ``cosine_similarity(v, t_vg)`` (the code's ``w12 / (w1 * w2).clamp(min=1e-8)``), per pair.
* The loss: ``calcul_loss`` of the code with the released configs' ``max_violation: 0`` and ``margin: 0.2``: the
  hinge summed over all negatives in both directions (the rows fix it, :data:`osdpm_lib.baselines.SYSTEMS`).  The
  paper's triplet loss with a dynamic variable margin (Eqs. 29-30, ``L_ct``) is an option
  (``margin_loss="dynamic"``): each pair's margin ``alpha_ct = gamma (e^beta - e^(beta S)) / (e^beta - 1)`` from a
  prior similarity ``S`` of the caption to the image's captions (:class:`CaptionPrior`); the released code does not
  implement it (its ``calcul_loss`` ignores the ``text_sim_matrix`` argument), so the default is the plain sum.

What differs:

* The sentence: the code encodes captions with skip-thought vectors (``Skipthoughts_Embedding_Module``: a
  pretrained ``BayesianUniSkip`` + linear + ReLU); here word embeddings and a bidirectional GRU are trained from
  scratch and ``t`` is the mean over the words of the two directions' averaged states, as the paper's Eqs. 10-12
  describe its sentence branch.
* The keywords branch and the dynamic fusion of sentence and keywords (``VGMF_Fusion``, Eqs. 26-27) are not used,
  as in the released ``BaseModel`` (it defines ``VGMF_Fusion`` but scores the guided sentence alone).
* The paper's PReLU after ``LF_conv``/``HF_conv`` (Eqs. 14-15) and its L2 normalisation of the joint map
  (Eqs. 17-18) are not in the code and not here.
* The CNN: at 64 px the shared backbone ends at ``layer3`` (its 4 x 4 grid; the shipped ``synthpre`` weights end
  there too), so ``layer4`` is AMFMN's own module, initialised as the backbone's ResNet initialises it
  (:attr:`~osdpm_lib.baselines.encoders.GridBackbone.next_stage`) and trained with the system (the original
  fine-tunes its whole ImageNet ResNet-18); at 224 px (``finetune`` profile) ``layer4`` is the backbone's grid stage.
* The dynamic margin's prior ``S`` (option): the paper names BLEU and METEOR; here the ``calc_sim`` of the
  repository's ``AMFMN/Rct/generate_t2i_sim_matrix.py`` on the book's tokens: the mean of BLEU-4 (1 for a caption
  that is one of the image's captions) and the mean share of each reference caption's content words found in the
  caption (stop words: :data:`osdpm_lib.priors.STOPWORDS`; no Porter stemming).  ``gamma = 0.4``, ``beta = 5`` by
  default (Fig. 6 plots ``beta = 5``; Table V compares ``gamma`` in 0.4-0.8 and finds ``beta`` insensitive).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .encoders import PAD, TextEncoder, l2norm
from .scoring import Baseline, triplet_loss

GUIDANCE = ("soft", "fusion", "sim")
MARGIN_LOSSES = ("sum", "dynamic")


def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cat([a, up(b)], 1)``: ``b`` upsampled (nearest) to ``a``'s grid, as ``ExtractFeature`` joins two stages
    (``nn.Upsample(scale_factor=2, mode='nearest')`` where the grids differ by two)."""
    return torch.cat([a, F.interpolate(b, size=a.shape[-2:], mode="nearest")], dim=1)


def _out_channels(stage: nn.Module) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class MVSA(nn.Module):
    """``ExtractFeature``'s joins and the solo feature + ``VSA_Module``: the image vector ``Fv`` ``[B, dim]``.

    ``stage_channels``/``stage_grids``: of ``layer1`` .. ``layer4``, or of ``layer1`` .. ``layer3`` with
    ``next_stage`` (``layer4``, then a module of this one, trained with it)."""

    def __init__(self, stage_channels, stage_grids, dim: int, next_stage: nn.Module | None = None,
                 channel_size: int = 3, out_channels: int = 1, normalize: bool = False):
        super().__init__()
        c, g = list(stage_channels), list(stage_grids)
        if len(c) == 3:
            if next_stage is None:
                raise ValueError("MVSA needs layer1-layer4: three stages given and no next_stage (layer4)")
            self.layer4 = next_stage
            c.append(_out_channels(next_stage))
            g.append((g[2] + 1) // 2)
        elif len(c) == 4:
            self.layer4 = None
        else:
            raise ValueError(f"MVSA joins layer1+layer2 and layer3+layer4; got {len(c)} stages")
        self.grid = g[2]
        stride = max(1, g[0] // g[2])
        self.LF_conv = nn.Conv2d(c[0] + c[1], channel_size, kernel_size=3, stride=stride)
        self.HF_conv = nn.Conv2d(c[2] + c[3], channel_size, kernel_size=1, stride=1)
        self.conv1x1_1 = nn.Conv2d(2 * channel_size, out_channels, kernel_size=1)
        self.conv1x1_2 = nn.Conv2d(2 * channel_size, out_channels, kernel_size=1)
        self.solo_attention = nn.Linear(out_channels * g[2] * g[2], dim)
        self.linear = nn.Linear(c[3], dim)                         # ExtractFeature.linear: the solo feature
        self.normalize = normalize

    def stages(self, *feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``layer1`` .. ``layer4`` (``layer4`` computed here when it is this module's own)."""
        if self.layer4 is not None:
            feats = (*feats[:3], self.layer4(feats[2]))
        return feats

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        f1, f2, f3, f4 = self.stages(*feats)
        lower, higher = join(f1, f2), join(f3, f4)
        solo = self.linear(f4.flatten(2).mean(-1))
        lf = self.LF_conv(lower)
        if lf.shape[-2:] != higher.shape[-2:]:                     # only where the grids do not divide evenly
            lf = F.adaptive_avg_pool2d(lf, higher.shape[-2:])
        hf = self.HF_conv(higher)
        x = torch.cat([lf, hf], dim=1)
        x = hf.mean(dim=1, keepdim=True) + x                       # Eq. 16
        attended = (self.conv1x1_1(x) * torch.sigmoid(self.conv1x1_2(x))).flatten(1)
        out = solo * torch.sigmoid(self.solo_attention(attended))
        return l2norm(out) if self.normalize else out


def dynamic_margin(prior: torch.Tensor, gamma: float = 0.4, beta: float = 5.0) -> torch.Tensor:
    """Eq. 29: ``alpha_ct = gamma (e^beta - e^(beta S)) / (e^beta - 1)``: ``gamma`` at ``S = 0``, 0 at ``S = 1``
    (``beta -> 0``: ``gamma (1 - S)``)."""
    if abs(beta) < 1e-6:
        return gamma * (1 - prior)
    return gamma * (math.exp(beta) - torch.exp(beta * prior)) / (math.exp(beta) - 1)


def sentence_vector(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 12: the mean over the real words of the GRU's states (the two directions averaged, Eqs. 10-11)."""
    m = mask.unsqueeze(-1).to(words.dtype)
    return (words * m).sum(1) / m.sum(1).clamp(min=1)


class AMFMN(Baseline):
    pairwise = True

    def __init__(self, vocab_size: int, dim: int = 256, word_dim: int = 128, stage_channels=(), stage_grids=(),
                 next_stage: nn.Module | None = None, guidance: str = "soft", margin_loss: str = "sum",
                 gamma: float = 0.4, beta: float = 5.0, **_):
        super().__init__()
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance={guidance!r}; expected one of {GUIDANCE}")
        if margin_loss not in MARGIN_LOSSES:
            raise ValueError(f"margin_loss={margin_loss!r}; expected one of {MARGIN_LOSSES}")
        self.guidance, self.margin_loss, self.gamma, self.beta = guidance, margin_loss, gamma, beta
        self.visual = MVSA(stage_channels, stage_grids, dim, next_stage)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=True)
        # CrossAttention's layers, named as there
        if guidance == "soft":
            self.cross_attention = nn.Linear(dim, dim)                 # followed by a sigmoid
        elif guidance == "fusion":
            self.cross_attention_fc1 = nn.Linear(2 * dim, dim)         # followed by a sigmoid: the gate
            self.cross_attention_fc2 = nn.Linear(2 * dim, dim)
        else:
            self.fc_visual = nn.Linear(dim, dim)
            self.fc_text = nn.Linear(dim, dim)
        self.prior: CaptionPrior | None = None

    def encode_image(self, *stages):
        return (self.visual(*stages),)

    def encode_text(self, tokens):
        words, mask, _ = self.text(tokens)
        return (sentence_vector(words, mask),)

    # ------------------------------------------------------------------ guidance
    def guided(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The visual-guided text ``t_vg`` of every (image, caption) pair: ``[bi, bt, d]`` (``CrossAttention``)."""
        d = v.shape[1]
        if self.guidance == "soft":                                                          # Eq. 20
            return torch.sigmoid(self.cross_attention(v))[:, None] * t[None]
        if self.guidance == "fusion":                                                        # Eqs. 21-22
            # linear(cat(v, t)) = W[:, :d] v + W[:, d:] t + b, without the [bi, bt, 2d] concatenation
            def lin(layer):
                return (v @ layer.weight[:, :d].T + layer.bias)[:, None] + (t @ layer.weight[:, d:].T)[None]
            return lin(self.cross_attention_fc2) * torch.sigmoid(lin(self.cross_attention_fc1))
        fv, ft = self.fc_visual(v), self.fc_text(t)                                          # Eqs. 23-25
        return torch.sigmoid(fv[:, None] * ft[None]) * ft[None]

    def score(self, img, txt):
        """``cos(v_i, t_vg(i, j))`` ``[bi, bt]``; for ``soft`` (``t_vg = g(v) * t``) without the ``[bi, bt, d]``
        tensor: the numerator is ``(v * g) @ t^T`` and ``|t_vg|^2 = g^2 @ (t^2)^T``."""
        v, t = img[0], txt[0]
        vn = v.norm(dim=1)[:, None]
        if self.guidance == "soft":
            g = torch.sigmoid(self.cross_attention(v))
            num = (v * g) @ t.T
            tn = ((g * g) @ (t * t).T).clamp(min=0).sqrt()
        else:
            tg = self.guided(v, t)
            num = (tg * v[:, None]).sum(-1)
            tn = tg.norm(dim=-1)
        return num / (vn * tn).clamp(min=1e-8)

    def pair_bytes(self, img, txt):
        return 32 if self.guidance == "soft" else 4 * 6 * txt[0].shape[1]   # a few [d] tensors per pair

    # ------------------------------------------------------------------ loss
    def see_captions(self, tokens, caption_index, words) -> None:
        if self.margin_loss == "dynamic":
            self.prior = CaptionPrior(tokens, caption_index, words)

    def loss_inputs(self, images, captions) -> dict:
        if self.margin_loss != "dynamic":
            return {}
        if self.prior is None:
            raise RuntimeError("margin_loss='dynamic' needs the training captions (see_captions) before training")
        return {"prior": torch.from_numpy(self.prior(images, captions))}

    def loss(self, scores, max_violation: bool = True, prior: torch.Tensor | None = None, positives=None):
        """``calcul_loss``: the hinge triplet loss with margin 0.2 (the rows train on the sum over negatives, the
        released configs' ``max_violation: 0``); with ``prior`` (``[B, B]``, image ``i`` x caption ``j``) each
        pair's margin is Eq. 29's ``alpha_ct`` of its prior similarity (Eq. 30)."""
        if prior is None:       # positives passed on only when there are some: the base call as it was otherwise
            return super().loss(scores, max_violation, **({} if positives is None else {"positives": positives}))
        return triplet_loss(scores, dynamic_margin(prior.to(scores), self.gamma, self.beta), max_violation,
                            positives)


class CaptionPrior:
    """The prior similarity ``S(T, T_I)`` of training captions to training images' captions, for Eq. 29: the
    ``calc_sim`` of AMFMN's ``Rct/generate_t2i_sim_matrix.py`` on token ids, the mean of

    * BLEU-4 of the caption against the image's captions (clipped n-gram precisions for n = 1..4, their geometric
      mean, the brevity penalty of the closest reference length; 0 when a precision is 0, as nltk's
      ``sentence_bleu`` without smoothing; 1 when the caption is one of the image's captions), and
    * the mean over the image's captions (those with content words) of the share of their content words (words
      not in :data:`osdpm_lib.priors.STOPWORDS`) that occur in the caption.

    ``tokens``: the split's captions ``long [M, L]`` (PAD-padded); ``caption_index``: ``(order, start, count)``
    of ``SplitTensors.caption_index()``; ``words``: the vocabulary's words (ids -> words).  The counts are sparse
    matrices built once; a batch costs a few sparse products."""

    MAX_N = 4

    def __init__(self, tokens: torch.Tensor, caption_index, words):
        from scipy import sparse

        from ..priors import STOPWORDS

        order, start, count = (np.asarray(x) for x in caption_index)
        seqs = [tuple(int(w) for w in row if w != PAD) for row in tokens.tolist()]
        n_cap = len(seqs)
        refs = [order[a:a + n].tolist() for a, n in zip(start, count)]          # each image's captions
        img_of = np.repeat(np.arange(len(refs)), [len(r) for r in refs])
        flat = np.array([j for r in refs for j in r], dtype=int)
        self.lengths = np.array([len(x) for x in seqs], dtype=np.float64)
        self.ref_len = np.full((len(refs), max([1] + [len(r) for r in refs])), np.inf)   # padded with inf
        for i, r in enumerate(refs):
            self.ref_len[i, :len(r)] = self.lengths[r]
        # exact matches: which distinct captions each image has
        uid = {x: k for k, x in enumerate(dict.fromkeys(seqs))}
        self.cap_uid = np.array([uid[x] for x in seqs], dtype=int)
        self.has = sparse.csr_matrix((np.ones(len(flat)), (img_of, self.cap_uid[flat])), shape=(len(refs), len(uid)))
        # clipped n-gram counts: min(c, r) = sum_k [c >= k][r >= k], r the most a reference of the image has
        self.levels = []
        for n in range(1, self.MAX_N + 1):
            grams = [Counter(x[k:k + n] for k in range(len(x) - n + 1)) for x in seqs]
            vocab = {g: k for k, g in enumerate(dict.fromkeys(g for c in grams for g in c))}
            cap = _counts(grams, vocab, n_cap)
            img = sparse.vstack([cap[r].max(axis=0) if r else sparse.csr_matrix((1, len(vocab))) for r in refs]
                                ).tocsr() if refs else sparse.csr_matrix((0, len(vocab)))
            top = int(cap.max()) if cap.nnz else 0
            self.levels.append([((cap >= k).astype(np.float32).tocsr(), (img >= k).astype(np.float32).tocsr())
                                for k in range(1, top + 1)])
        # content words: each caption's set; per image the mean over its captions (with content words) of their
        # sets divided by their numbers of content tokens (calc_sim's len(v_sent))
        stop = {k for k, w in enumerate(words) if w in STOPWORDS} | {PAD}
        content = [[w for w in x if w not in stop] for x in seqs]
        sets = [sorted(set(c)) for c in content]
        rows = np.repeat(np.arange(n_cap), [len(c) for c in sets])
        cols = np.array([w for c in sets for w in c], dtype=int)
        self.content = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_cap, len(words)))
        sizes = np.array([len(c) for c in content], dtype=np.float64)
        weight = np.zeros(n_cap)                        # 1 / (len(v_sent) * number of the image's non-empty refs)
        for r in refs:
            r = [j for j in r if sizes[j] > 0]
            weight[r] = 1.0 / (sizes[r] * len(r)) if r else 0.0
        self.entity = (sparse.csr_matrix((weight[flat], (img_of, flat)), shape=(len(refs), n_cap))
                       @ self.content).tocsr()

    def __call__(self, images, captions) -> np.ndarray:
        """float32 ``[len(images), len(captions)]``: ``S`` of caption ``captions[j]`` to image ``images[i]``."""
        im, cp = np.asarray(images), np.asarray(captions)
        c = self.lengths[cp]                                                      # [B_t]
        logp = np.zeros((len(im), len(cp)))
        zero = np.zeros((len(im), len(cp)), dtype=bool)
        for n, levels in enumerate(self.levels, start=1):
            clipped = sum((r[im] @ h[cp].T).toarray() for h, r in levels) if levels else 0
            total = np.maximum(1.0, c - n + 1)
            p = np.broadcast_to(np.asarray(clipped, dtype=np.float64) / total[None], logp.shape)
            zero |= p <= 0
            logp += np.log(np.where(p > 0, p, 1.0)) / self.MAX_N
        # brevity penalty: the reference length closest to the caption's (the shorter one on a tie)
        ref = self.ref_len[im][:, None, :]                                        # [B_i, 1, R]
        pick = np.argmin(np.abs(ref - c[None, :, None]) + 1e-6 * np.where(np.isinf(ref), 0, ref), axis=2)
        r = np.take_along_axis(np.broadcast_to(ref, (len(im), len(cp), ref.shape[2])), pick[..., None], 2)[..., 0]
        bp = np.where(c[None] > r, 1.0, np.exp(1 - r / np.maximum(c[None], 1e-9)))
        bleu = np.where(zero | (c[None] == 0), 0.0, bp * np.exp(logp))
        bleu = np.where(self.has[im][:, self.cap_uid[cp]].toarray() > 0, 1.0, bleu)
        entity = (self.entity[im] @ self.content[cp].T).toarray()
        return ((bleu + entity) / 2).astype(np.float32)


def _counts(grams, vocab, n_rows):
    from scipy import sparse

    rows = np.repeat(np.arange(n_rows), [len(g) for g in grams])
    cols = np.array([vocab[k] for g in grams for k in g], dtype=int)
    vals = np.array([v for g in grams for v in g.values()], dtype=np.float32)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_rows, len(vocab)))

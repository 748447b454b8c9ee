"""GaLR (osdpm_lib.baselines.galr) against its code (xiaoyuan1996/GaLR, layers/GaLR.py and GaLR_utils.py): the
GCN's depth (three bias-free graph convolutions, checked on a hand case in float64 numpy), the SA / SGA blocks
(an attention sublayer and an FFN sublayer, each residual + the code's LayerNorm), MIDF's order of operations, and
a local branch that reads another input than the global one (layer3's cells, where the global vector pools
layer4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osdpm_lib.baselines import SYSTEMS
from osdpm_lib.baselines.galr import FFN, GCN, MIDF, SA, SGA, GaLR, LayerNorm, MHAtt, similarity_adjacency

STAGES = dict(stage_channels=(4, 8, 16, 32), stage_grids=(16, 8, 4, 2))


def _stages(n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, c, s, s, generator=g) for c, s in zip(STAGES["stage_channels"], STAGES["stage_grids"]))


def test_gcn_has_three_bias_free_layers():
    gcn = GCN(nodes=5, dim_in=8, dim=6)
    layers = [m for name, m in gcn.named_children() if name.startswith("fc")]
    assert [n for n, _ in gcn.named_children()] == ["fc1", "fc2", "fc3", "out"]
    assert len(layers) == 3 and all(m.bias is None for m in layers)
    assert [(m.in_features, m.out_features) for m in layers] == [(8, 8), (8, 4), (4, 20)]   # d_in, d_in/2, d_out
    assert gcn.out.in_features == 5 * 20                 # the nodes' outputs concatenated, as the code's view(b, -1)
    galr = GaLR(vocab_size=10, dim=16, word_dim=8, **STAGES)
    assert sum(1 for m in galr.local.gcn.modules() if isinstance(m, torch.nn.Linear) and m.bias is None) == 3


def test_gcn_forward_is_three_relu_graph_convolutions_on_a_hand_case():
    torch.manual_seed(0)
    gcn = GCN(nodes=3, dim_in=2, dim=2, dim_out=2).double()
    W1 = np.array([[1.0, -1.0], [0.5, 2.0]])
    W2 = np.array([[1.0, 1.0]])                  # 2 -> 1
    W3 = np.array([[2.0], [-1.0]])               # 1 -> 2
    Wo, bo = np.arange(12, dtype=float).reshape(2, 6) / 10, np.array([0.1, -0.2])
    with torch.no_grad():
        for layer, w in ((gcn.fc1, W1), (gcn.fc2, W2), (gcn.fc3, W3), (gcn.out, Wo)):
            layer.weight.copy_(torch.tensor(w))
        gcn.out.bias.copy_(torch.tensor(bo))
    A = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    X = np.array([[1.0, 2.0], [-1.0, 0.0], [0.0, 3.0]])
    h = X
    for w in (W1, W2, W3):
        h = np.maximum(0.0, (A @ h) @ w.T)
    # by hand, layer 1: A X = [[0, 1], [-1, 0], [0, 2]]; times W1^T: [[-1, 2], [-1, -0.5], [-2, 4]]; ReLU
    np.testing.assert_allclose(np.maximum(0, (A @ X) @ W1.T), [[0, 2], [0, 0], [0, 4]])
    out = Wo @ h.reshape(-1) + bo
    expected = out / np.linalg.norm(out)
    with torch.no_grad():
        got = gcn(torch.tensor(A)[None], torch.tensor(X)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sa_and_sga_blocks_have_attention_and_ffn_sublayers():
    dim, ff = 16, 32
    sa, sga = SA(dim, ff, heads=4).eval(), SGA(dim, ff, heads=4).eval()
    assert isinstance(sa.mhatt, MHAtt) and isinstance(sa.ffn, FFN)
    assert isinstance(sga.mhatt1, MHAtt) and isinstance(sga.mhatt2, MHAtt) and isinstance(sga.ffn, FFN)
    assert all(isinstance(m, LayerNorm) for m in (sa.norm1, sa.norm2, sga.norm1, sga.norm2, sga.norm3))
    lin = [m for m in sa.ffn.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(dim, ff), (ff, dim)]
    for m in (sa.mhatt, sga.mhatt1, sga.mhatt2):
        assert [n for n, _ in m.named_children()][:4] == ["linear_v", "linear_k", "linear_q", "linear_merge"]
    x, y = torch.randn(3, 1, dim), torch.randn(3, 5, dim)
    with torch.no_grad():
        assert sa(x).shape == (3, 1, dim) and sga(x, y).shape == (3, 1, dim) and sga(y, x).shape == (3, 5, dim)
        # SA as the code composes it: x = LN(x + MHAtt(x, x, x)); x = LN(x + FFN(x))
        h = sa.norm1(x + sa.mhatt(x, x, x))
        torch.testing.assert_close(sa(x), sa.norm2(h + sa.ffn(h)))
        # SGA: then attention with keys and values from y (the guide), queries from x
        h = sga.norm1(x + sga.mhatt1(x, x, x))
        h = sga.norm2(h + sga.mhatt2(y, y, h))
        torch.testing.assert_close(sga(x, y), sga.norm3(h + sga.ffn(h)))
        assert not torch.allclose(sga(x, y), sga(x, y + 1.0))          # the guide matters
        # one token: the softmax is over one key (weight 1), attention = merge(value(x))
        m = sa.mhatt
        torch.testing.assert_close(m(x, x, x), m.linear_merge(m.linear_v(x)))


def test_layer_norm_is_the_codes():
    ln = LayerNorm(4)
    x = torch.tensor([[1.0, 2.0, 4.0, 9.0]])
    ref = (x - x.mean()) / (x.std(unbiased=True) + 1e-6)
    torch.testing.assert_close(ln(x), ref)


def test_midf_order_of_operations():
    torch.manual_seed(0)
    midf = MIDF(16, heads=4).eval()
    g, loc = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        G, L = midf.g2g_SA(g[:, None]), midf.l2l_SA(loc[:, None])
        L = midf.g2l_SGA(L, G)                  # local correction by the global token
        G = midf.l2g_SGA(G, L)                  # global supplement by the corrected local token
        G, L = G[:, 0], L[:, 0]
        G, L = torch.sigmoid(L) * G, G + L
        w = midf.dynamic_weight(G + L)
        torch.testing.assert_close(midf(g, loc), w[:, :1] * G + w[:, 1:] * L)
    assert [type(m).__name__ for m in midf.dynamic_weight] == ["Linear", "Sigmoid", "Dropout", "Linear", "Softmax"]


def test_local_branch_reads_layer3_cells_the_global_one_pools_layer4():
    torch.manual_seed(0)
    model = GaLR(vocab_size=10, dim=16, word_dim=8, **STAGES).eval()
    stages = _stages()
    seen = {}
    def keep(name):
        def hook(module, args, out):          # returns None: the output stays as it is
            seen.setdefault(name, args[0])
        return hook

    model.local.register_forward_hook(keep("local"))
    model.global_.linear.register_forward_hook(keep("solo"))
    with torch.no_grad():
        base = model.encode_image(*stages)[0]
    assert seen["local"] is stages[2]                                   # layer3: 4 x 4 cells
    assert model.local.gcn.out.in_features == 4 * 4 * 20                 # one node per layer3 cell
    torch.testing.assert_close(seen["solo"], stages[3].flatten(2).mean(-1))   # the global content: layer4's mean
    assert seen["local"].shape[-1] > stages[3].shape[-1]                # finer cells than the global vector pools
    # the local branch sees a layer3 cell the global vector only sees through MVSA's 3-channel mask
    a = model.local(stages[2])
    bumped = stages[2].clone()
    bumped[:, :, 0, 0] += 1.0
    assert not torch.allclose(model.local(bumped), a)
    assert torch.isfinite(base).all() and base.shape == (3, 16)


def test_similarity_adjacency_rows_sum_to_one():
    x = torch.randn(2, 5, 7)
    adj = similarity_adjacency(x)
    torch.testing.assert_close(adj.sum(-1), torch.ones(2, 5))
    assert (adj.diagonal(dim1=1, dim2=2) >= adj.max(-1).values - 1e-6).all()     # a cell is most like itself


def test_galr_row_names_its_simplifications():
    text = SYSTEMS["GaLR"].replaced
    for part in ("DREA", "layer3", "adjacency", "skip-thought", "layer4", "first to both", "K=30", "summed"):
        assert part in text, part
    assert SYSTEMS["GaLR"].all_stages and SYSTEMS["GaLR"].warmup_epochs is None and SYSTEMS["GaLR"].rerank
    with pytest.raises(ValueError, match="layer1"):
        GaLR(vocab_size=10, dim=16)

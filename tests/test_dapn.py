"""DAPN's mutual spatial-channel attention, by what each part must change when another part changes.

Small fixtures: a random 16-channel 4x4 grid and modules built with explicit sizes (no default hyperparameter is
relied on).  The channel weights ``a_c = sigmoid(channel_mlp(desc))`` are not an output, so they are read with a
forward hook on the channel MLP (its last call is the final round's)."""

import pytest
import torch
import torch.nn.functional as F

from osdpm_lib.models import DAPN, CollaborativeAttention, SaliencyRegionAttention

DIM, H, W = 16, 4, 4


@pytest.fixture
def x():
    return torch.randn(2, DIM, H, W, generator=torch.Generator().manual_seed(0))


def collab(rounds=2, seed=0):
    torch.manual_seed(seed)
    return CollaborativeAttention(DIM, reduction=2, rounds=rounds).eval()


def run_with_channel_weights(att, x):
    """(context, spatial map, [a_c of every round]) of one forward pass."""
    seen = []
    hook = att.channel_mlp.register_forward_hook(lambda m, inp, out: seen.append(torch.sigmoid(out).detach()))
    try:
        with torch.no_grad():
            context, a_s = att(x)
    finally:
        hook.remove()
    return context, a_s, seen


def test_collaborative_context_is_spatially_and_channel_weighted_sum(x):
    """context = sum_n a_s[n] * a_c * x[n] with the final round's a_c and the returned spatial map."""
    att = collab()
    context, a_s, a_c = run_with_channel_weights(att, x)
    want = (x * a_c[-1][:, :, None, None] * a_s[:, None]).sum(dim=(2, 3))
    torch.testing.assert_close(context, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a_s.sum(dim=(1, 2)), torch.ones(2), rtol=0, atol=1e-5)


def test_perturbing_spatial_head_changes_channel_weights_and_context(x):
    """Channel weights come from a spatially attended descriptor: a different spatial head gives other a_c."""
    att = collab()
    c1, s1, a1 = run_with_channel_weights(att, x)
    with torch.no_grad():
        att.spatial[-1].weight.add_(torch.randn(att.spatial[-1].weight.shape, generator=torch.Generator().manual_seed(1)))
    c2, s2, a2 = run_with_channel_weights(att, x)
    assert not torch.allclose(s1, s2, atol=1e-4)
    assert torch.equal(a1[0], a2[0])                       # round 1 starts from plain (uniform) pooling
    assert (a1[-1] - a2[-1]).abs().max() > 1e-3            # the final a_c depends on the spatial map
    assert (c1 - c2).abs().max() > 1e-3


def test_perturbing_channel_mlp_changes_context_with_spatial_map_held_fixed(x):
    """With a spatial head whose output is constant (uniform map whatever the channel weights), a different
    channel MLP still changes the context: the context is weighted by the channel weights."""
    att = collab()
    with torch.no_grad():
        att.spatial[-1].weight.zero_()
        att.spatial[-1].bias.zero_()
    c1, s1, a1 = run_with_channel_weights(att, x)
    with torch.no_grad():
        att.channel_mlp[-1].bias.add_(3 * torch.randn(DIM, generator=torch.Generator().manual_seed(2)))
    c2, s2, a2 = run_with_channel_weights(att, x)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    torch.testing.assert_close(s1, torch.full_like(s1, 1 / (H * W)), rtol=0, atol=1e-7)
    assert (a1[-1] - a2[-1]).abs().max() > 1e-2
    assert (c1 - c2).abs().max() > 1e-3


def test_perturbing_channel_mlp_changes_spatial_map(x):
    """The spatial map is computed from channel-reweighted features."""
    att = collab()
    _, s1, _ = run_with_channel_weights(att, x)
    with torch.no_grad():
        att.channel_mlp[-1].bias.add_(3 * torch.randn(DIM, generator=torch.Generator().manual_seed(2)))
    _, s2, _ = run_with_channel_weights(att, x)
    assert (s1 - s2).abs().max() > 1e-4


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_collaborative_attention_runs_its_rounds(x, rounds):
    """Each round recomputes the channel weights from the previous round's spatial map."""
    att = collab(rounds)
    _, _, a_c = run_with_channel_weights(att, x)
    assert len(a_c) == rounds
    if rounds > 1:
        assert (a_c[0] - a_c[1]).abs().max() > 1e-4


def test_more_rounds_change_the_output(x):
    one, two = collab(1), collab(2)
    two.load_state_dict(one.state_dict())
    c1, s1, _ = run_with_channel_weights(one, x)
    c2, s2, _ = run_with_channel_weights(two, x)
    assert (c1 - c2).abs().max() > 1e-4 and (s1 - s2).abs().max() > 1e-5


def test_dapn_feeds_collaborative_context_to_scale_gate(x):
    """The region module's scale weights come from the collaborative context, not from plain mean pooling."""
    torch.manual_seed(0)
    dapn = DAPN(DIM, 8, {"scales": (4, 2)}).eval()
    with torch.no_grad():
        _, m1 = dapn(x)
        dapn.collab.channel_mlp[-1].bias.add_(3 * torch.randn(DIM, generator=torch.Generator().manual_seed(3)))
        _, m2 = dapn(x)
    assert (m1["scale_weights"] - m2["scale_weights"]).abs().max() > 1e-5


def test_dapn_output_is_projection_of_both_parts(x):
    """out = Linear([context, object]) over the group-normalised grid; each part alone is a valid DAPN."""
    torch.manual_seed(0)
    dapn = DAPN(DIM, 8, {"scales": (4, 2)}).eval()
    with torch.no_grad():
        dapn.out.weight.normal_(0, 0.1)
        dapn.out.bias.normal_(0, 0.1)
        out, maps = dapn(x)
        xn = torch.nn.functional.group_norm(x, 1, dapn.norm.weight, dapn.norm.bias, dapn.norm.eps)
        context, spatial = dapn.collab(xn)
        obj, saliency, scale_w = dapn.region(xn, context)
        torch.testing.assert_close(out, dapn.out(torch.cat([context, obj], -1)))
        torch.testing.assert_close(maps["spatial"], spatial)
        torch.testing.assert_close(maps["saliency"], saliency)
        torch.testing.assert_close(maps["scale_weights"], scale_w)
    only_collab = DAPN(DIM, 8, {"saliency": False})
    only_region = DAPN(DIM, 8, {"collaborative": False, "scales": (4, 2)})
    assert only_collab.region is None and only_collab.out.in_features == DIM
    assert only_region.collab is None and only_region.out.in_features == DIM
    assert set(only_collab(x)[1]) == {"spatial"} and set(only_region(x)[1]) == {"saliency", "scale_weights"}
    with pytest.raises(ValueError, match="at least one"):
        DAPN(DIM, 8, {"collaborative": False, "saliency": False})


def test_region_attention_by_hand():
    """Scales count regions per side.  Scale 2 on a 2x2 grid: the regions are the cells, weighted by softmax(m / T);
    scale 1: one region, the saliency-weighted mean of the grid.  The scale gate mixes the per-scale vectors."""
    torch.manual_seed(0)
    att = SaliencyRegionAttention(8, scales=(2, 1), temperature=0.5).eval()
    x = torch.randn(1, 8, 2, 2, generator=torch.Generator().manual_seed(4))
    context = torch.randn(1, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        obj, m, scale_w = att(x, context)
        conv1, conv2 = att.saliency[0], att.saliency[2]                # 1x1 conv, GELU, 1x1 conv
        sal = torch.sigmoid(conv2(F.gelu(conv1(x))))[0, 0].flatten()    # [4]
        cells = x[0].flatten(1)                                         # [8, 4]
        per1 = cells @ torch.softmax(sal / 0.5, 0)
        per2 = (cells * sal).sum(1) / sal.sum()
        w = torch.softmax(att.scale_gate(context)[0], 0)
    torch.testing.assert_close(m[0].flatten(), sal)
    torch.testing.assert_close(scale_w[0], w)
    torch.testing.assert_close(obj[0], w[0] * per1 + w[1] * per2, rtol=1e-5, atol=1e-6)


def collaborative_by_hand(att: CollaborativeAttention, x: torch.Tensor):
    """CollaborativeAttention's forward written out: uniform spatial weights to start, then per round the
    spatially attended descriptor -> channel weights -> channel-weighted saliency -> spatial softmax."""
    b, c, h, w = x.shape
    a_s = torch.ones(b, h * w, dtype=x.dtype) / (h * w)
    flat = x.flatten(2)                                              # [B, C, N]
    fc1, fc2 = att.channel_mlp[0], att.channel_mlp[2]                # Linear, GELU, Linear
    conv1, conv2 = att.spatial[0], att.spatial[2]                    # 1x1 conv, GELU, 3x3 conv
    for _ in range(att.rounds):
        desc = torch.einsum("bcn,bn->bc", flat, a_s)
        a_c = torch.sigmoid(fc2(F.gelu(fc1(desc))))
        a_s = torch.softmax(conv2(F.gelu(conv1(x * a_c[:, :, None, None]))).flatten(1), dim=1)
    return torch.einsum("bcn,bc,bn->bc", flat, a_c, a_s), a_s.view(b, h, w)


def test_collaborative_attention_by_hand_in_float64_on_a_7x7_grid():
    """The whole forward against the written-out rounds, in float64 (1/49 is not exact in float32) on a grid of
    another size than the fixtures'."""
    torch.manual_seed(3)
    att = CollaborativeAttention(DIM, reduction=2, rounds=2).double().eval()
    x = torch.randn(2, DIM, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        context, a_s = att(x)
        want_context, want_a_s = collaborative_by_hand(att, x)
    assert context.dtype == torch.float64
    torch.testing.assert_close(context, want_context, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a_s, want_a_s, rtol=1e-12, atol=1e-14)


def test_collaborative_attention_runs_on_the_inputs_device():
    """Its starting spatial weights are made on the input's device ("meta" stands in for a GPU)."""
    att = CollaborativeAttention(DIM, reduction=2, rounds=1).to("meta")
    context, a_s = att(torch.empty(2, DIM, H, W, device="meta"))
    assert context.device.type == "meta" and a_s.shape == (2, H, W)


def test_module_defaults_are_dapn_configs_defaults():
    """The attention modules built without arguments use DAPNConfig's defaults (rounds, reduction, scales,
    temperature), so that a DAPN built from the config and one built from the modules agree."""
    from osdpm_lib.models import DAPNConfig

    cfg = DAPNConfig()
    att, reg = CollaborativeAttention(64), SaliencyRegionAttention(64)
    assert att.rounds == cfg.rounds and att.channel_mlp[0].out_features == 64 // cfg.reduction
    assert reg.scales == cfg.scales and reg.temperature == cfg.temperature
    assert reg.saliency[0].out_channels == 64 // cfg.reduction
    dapn = DAPN(64, 8, {"reduction": 2})                     # the config's reduction reaches both modules
    assert dapn.collab.channel_mlp[0].out_features == 32 and dapn.region.saliency[0].out_channels == 32


def test_collaborative_first_guess_is_plain_average_pooling_in_the_inputs_precision():
    """The first round's descriptor is the plain spatial mean of the features, at the input's precision (float64
    here, on a 7x7 grid where 1/49 is not exact in float32)."""
    torch.manual_seed(0)
    att = CollaborativeAttention(16).double()
    x = torch.randn(2, 16, 7, 7, dtype=torch.float64)
    seen = []
    att.channel_mlp.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    context, a_s = att(x)
    assert context.dtype == a_s.dtype == torch.float64
    assert len(seen) == att.rounds
    torch.testing.assert_close(seen[0], x.mean(dim=(2, 3)), rtol=1e-14, atol=1e-14)

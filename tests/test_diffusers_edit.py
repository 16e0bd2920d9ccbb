"""Editing through exact inversion: strength, freeze_last, the Direct-Inversion variant."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep.backends.diffusers import edit  # noqa: E402
from linmultistep.backends.diffusers.attention import SharedSelfAttention  # noqa: E402
from linmultistep.backends.diffusers.adapters import encode_prompts  # noqa: E402
from linmultistep.backends.diffusers.pipeline import encode_images, parts_of  # noqa: E402
from linmultistep.backends.diffusers.testing import sample_images  # noqa: E402
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from bounds import round_trip_bound  # noqa: E402


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("direct,method", [(True, "obelm"), (False, "obelm"), (True, "edict")])
def test_edit_to_the_same_prompt_reproduces_the_input(pipe, direct, method):
    x = sample_images(2)
    z = encode_images(parts_of(pipe), x)
    for strength in (1.0, 0.5):
        _, z0 = edit(pipe, x, "a cat", "a cat", num_steps=6, method=method, strength=strength, guidance_scale=2.0,
                     source_guidance_scale=2.0, direct_inversion=direct, self_attention_steps=1.0, return_dict=False)[:2]
        assert rel(z0, z) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 6))


def test_edit_changes_the_image_and_the_variants_differ(pipe):
    x = sample_images(1)
    z = encode_images(parts_of(pipe), x)
    runs = {}
    for direct in (True, False):
        _, runs[direct] = edit(pipe, x, "a cat", "a red dog", num_steps=6, guidance_scale=3.0,
                               direct_inversion=direct, self_attention_steps=1.0, return_dict=False)[:2]
        assert rel(runs[direct], z) > 1e-2
    assert rel(runs[True], runs[False]) > 1e-3  # the shared self-attention does act
    # a weaker edit stays closer to the input
    _, weak = edit(pipe, x, "a cat", "a red dog", num_steps=6, guidance_scale=3.0, strength=0.34, return_dict=False)[:2]
    assert rel(weak, z) < rel(runs[True], z)
    # processors are restored after the edit
    assert not any("Shared" in type(p).__name__ for p in pipe.unet.attn_processors.values())


def test_shared_self_attention_replaces_target_maps_with_source_maps(pipe):
    """Independent check on one layer: target output = softmax(Q_s K_s^T / sqrt d) V_t."""
    name, attn = next((n, m) for n, m in pipe.unet.named_modules() if n.endswith("attn1"))
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    with torch.no_grad():
        sharing = SharedSelfAttention(pipe.unet, batch=1)
        with sharing:
            sharing.active = True
            out = attn(h)
        heads = attn.heads

        def split(t):
            return t.view(2, 16, heads, -1).transpose(1, 2)

        q, k, v = split(attn.to_q(h)), split(attn.to_k(h)), split(attn.to_v(h))
        w = torch.softmax(q[0] @ k[0].transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        tgt = (w @ v[1]).transpose(0, 1).reshape(16, -1)
        expected_tgt = attn.to_out[0](tgt)
        plain = attn(h)
    torch.testing.assert_close(out[1], expected_tgt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0], plain[0], rtol=1e-5, atol=1e-6)
    assert rel(out[1], plain[1]) > 1e-3


def test_freeze_last_and_bad_arguments(pipe):
    x = sample_images(1)
    _, a = edit(pipe, x, "a cat", "a red dog", num_steps=6, guidance_scale=3.0, return_dict=False)[:2]
    _, b = edit(pipe, x, "a cat", "a red dog", num_steps=6, guidance_scale=3.0, freeze_last=2, return_dict=False)[:2]
    assert rel(a, b) > 1e-4
    with pytest.raises(ValueError, match="strength"):
        edit(pipe, x, "a", "b", num_steps=6, strength=0.0)
    with pytest.raises(ValueError, match="freeze_last"):
        edit(pipe, x, "a", "b", num_steps=6, freeze_last=6)
    assert encode_prompts(pipe, ["a", "b"], 2).cond.shape[0] == 2
    with pytest.raises(ValueError, match="3 entries"):
        encode_prompts(pipe, ["a", "b", "c"], 2)

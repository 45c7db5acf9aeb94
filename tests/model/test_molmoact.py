"""The model against reference-shaped computations written out here with plain tensor ops."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import init_random_
from model.config import tiny_config
from model.molmoact import MolmoAct
from model.processor import reasoning_prompt


def tiny_model(variant="qwen2", seed=0):
    torch.manual_seed(seed)
    return init_random_(MolmoAct(tiny_config(variant)), seed, std=0.2).eval()


# -- reference-shaped computations (semantics from reference/molmoact-internals.md) -----------------
def ref_rmsnorm(x, w, eps=1e-6):
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def ref_mha(q_in, kv_in, m, heads):
    """Eager attention as the reference's ViTMultiHeadDotProductAttention: einsum, float32 softmax, no mask."""
    q, k, v = m.wq(q_in), m.wk(kv_in), m.wv(kv_in)
    hd = q.shape[-1] // heads
    q = q.reshape(*q.shape[:2], heads, hd)
    k = k.reshape(*k.shape[:2], heads, hd)
    v = v.reshape(*v.shape[:2], heads, hd)
    w = torch.einsum("bqhd,bkhd->bhqk", q.float() / math.sqrt(hd), k.float()).softmax(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", w.to(v.dtype), v)
    return m.wo(out.reshape(*out.shape[:2], heads * hd))


def ref_llm_block(x, blk, cfg, positions):
    """One Qwen2-style pre-norm block, written from the reference semantics."""
    d, nh, nkv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    h = ref_rmsnorm(x, blk.attn_norm.weight)
    qkv = h @ blk.self_attn.att_proj.weight.T + blk.self_attn.att_proj.bias
    q, k, v = qkv[..., :d], qkv[..., d:d + nkv * hd], qkv[..., d + nkv * hd:]
    q = q.view(1, -1, nh, hd).transpose(1, 2)
    k = k.view(1, -1, nkv, hd).transpose(1, 2)
    v = v.view(1, -1, nkv, hd).transpose(1, 2)
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
    ang = positions[:, None].float() * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rot(t):
        return torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
    q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
    k = k.repeat_interleave(nh // nkv, dim=1)
    v = v.repeat_interleave(nh // nkv, dim=1)
    s = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    scores = scores.masked_fill(torch.triu(torch.ones(s, s, dtype=torch.bool), 1), float("-inf"))
    att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, s, d)
    x = x + att @ blk.self_attn.attn_out.weight.T
    h = ref_rmsnorm(x, blk.ff_norm.weight) @ blk.mlp.ff_proj.weight.T
    up, gate = h[..., :h.shape[-1] // 2], h[..., h.shape[-1] // 2:]
    return x + (F.silu(gate) * up) @ blk.mlp.ff_out.weight.T


# -- tests --------------------------------------------------------------------------------------------
def test_llm_block_matches_reference_shaped_computation():
    model = tiny_model()
    cfg = model.cfg.llm_config
    x = torch.randn(1, 9, cfg.hidden_size)
    pos = torch.arange(9)
    model.init_rope()
    cos, sin = model.rope_cos[pos], model.rope_sin[pos]
    blk = model.model.transformer.blocks[0]
    ours = blk(x, cos, sin, 0, None, None, None, None)
    torch.testing.assert_close(ours, ref_llm_block(x, blk, cfg, pos), atol=1e-5, rtol=1e-5)


def test_attention_qkv_are_what_the_forward_pass_attends_with():
    """Training reads one head's attention scores from ``qkv`` (app.sim.train.look_loss)."""
    model = tiny_model()
    cfg = model.cfg.llm_config
    x = torch.randn(2, 7, cfg.hidden_size)
    model.init_rope()
    cos, sin = model.rope_cos[:7], model.rope_sin[:7]
    attn = model.model.transformer.blocks[0].self_attn
    q, k, v = attn.qkv(x, cos, sin)
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)
    scores = scores.masked_fill(torch.triu(torch.ones(7, 7, dtype=torch.bool), 1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, -1) @ attn.attn_out.weight.T
    torch.testing.assert_close(attn(x, cos, sin, 0, None, None, None, None), out, atol=1e-5, rtol=1e-5)


def test_pooling_and_projector_match_reference_shaped_computation():
    model = tiny_model()
    vb = model.model.vision_backbone
    feats = torch.randn(2 * 729, vb.image_pooling_2d.wq.in_features)
    idx = torch.randint(0, 2 * 729, (30, 4))
    idx[::3, 1] = -1          # partly padded cells: their features are zeroed but still counted in the mean
    idx[5] = -1               # a fully padded cell produces no token
    pooled, valid = vb.pool(feats, idx)
    ours = vb.image_projector(pooled)[valid]

    gathered = feats[idx.clamp(min=0)] * (idx >= 0)[..., None].float()
    query = gathered.mean(1, keepdim=True)
    ref = ref_mha(query, gathered, vb.image_pooling_2d, model.cfg.adapter_config.num_attention_heads)[:, 0]
    p = vb.image_projector
    ref = (F.silu(ref @ p.w1.weight.T) * (ref @ p.w3.weight.T)) @ p.w2.weight.T
    keep = (idx >= 0).any(-1)
    assert int(keep.sum()) == 29 and ours.shape == (29, model.cfg.llm_config.hidden_size)
    torch.testing.assert_close(ours, ref[keep], atol=1e-4, rtol=1e-4)


def test_vit_reads_layers_in_config_order_and_builds_only_what_it_needs():
    model = tiny_model()
    vb = model.model.vision_backbone
    assert len(vb.image_vit.transformer.resblocks) == 7     # 9 configured, deepest read is -3 → block 6
    assert vb.layer_indices == [6, 0]
    crops = torch.randn(1, 729, 588)
    vit = vb.image_vit
    x = vit.patch_embedding(crops) + vit.positional_embedding[None]
    states = []
    for blk in vit.transformer.resblocks:
        ln = blk.attention_norm(x)
        x = x + ref_mha(ln, ln, blk.attention, 4)
        x = x + blk.feed_forward.w2(F.gelu(blk.feed_forward.w1(blk.ffn_norm(x)), approximate="tanh"))
        states.append(x)
    expected = torch.cat([states[6], states[0]], -1)[0]
    torch.testing.assert_close(vb.encode(crops), expected, atol=1e-4, rtol=1e-4)


def test_image_features_are_added_to_patch_embeddings(tiny, rgb):
    inp = tiny.processor([rgb], reasoning_prompt("pick up the red cube", 1))
    m = tiny.model
    with torch.inference_mode():
        plain = m.embed(inp.input_ids)
        with_img = m.embed(inp.input_ids, inp.crops, inp.pooled_patches_idx)
        feats = m.model.vision_backbone(inp.crops, inp.pooled_patches_idx)
    is_patch = inp.input_ids[0] == tiny.config.image_patch_id
    assert int(is_patch.sum()) == feats.shape[0] == 392
    torch.testing.assert_close(with_img[0, is_patch] - plain[0, is_patch], feats, atol=1e-5, rtol=1e-5)
    assert torch.equal(with_img[0, ~is_patch], plain[0, ~is_patch])


@pytest.mark.parametrize("variant", ["qwen2", "olmo2"])
def test_cached_prefill_and_decode_equal_full_forward(variant):
    model = tiny_model(variant)
    ids = torch.randint(0, 512, (1, 40))
    with torch.inference_mode():
        full = model.logits(model(model.embed(ids)))
        cache = model.allocate_cache(64)
        out = [model.logits(model(model.embed(ids[:, :30]), torch.arange(30), cache, kv_len=30))]
        for t in range(30, 40):  # one token at a time, eager path
            out.append(model.logits(model(model.embed(ids[:, t:t + 1]), torch.tensor([t]), cache, kv_len=t + 1)))
    torch.testing.assert_close(torch.cat(out, 1), full, atol=1e-4, rtol=1e-4)


def test_static_shape_decode_equals_eager_and_truncation_leaves_no_stale_entries():
    model = tiny_model()
    ids = torch.randint(0, 512, (1, 20))
    other = torch.randint(0, 512, (1, 6))
    with torch.inference_mode():
        cache = model.allocate_cache(32)
        model(model.embed(ids[:, :14]), torch.arange(14), cache, kv_len=14)
        # Write garbage for positions 14..19, then truncate back: it must not leak into later steps.
        model(model.embed(other), torch.arange(14, 20), cache, kv_len=20)
        cache.truncate(14)
        eager = model.logits(model(model.embed(ids[:, 14:20]), torch.arange(14, 20), cache, kv_len=20))
        cache.truncate(14)
        static = model.logits(model(model.embed(ids[:, 14:20]), torch.arange(14, 20), cache, kv_len=None))
        full = model.logits(model(model.embed(ids)))[:, 14:20]
    torch.testing.assert_close(eager, full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(static, full, atol=1e-4, rtol=1e-4)


def test_cache_is_allocated_once_and_bounds_are_checked():
    model = tiny_model()
    cache = model.allocate_cache(16)
    ptr = cache.k.data_ptr()
    with torch.inference_mode():
        model(model.embed(torch.zeros(1, 4, dtype=torch.long)), torch.arange(4), cache, kv_len=4)
    assert cache.k.data_ptr() == ptr
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.allocate_cache(10**6)
    with pytest.raises(ValueError):
        cache.truncate(17)
    with pytest.raises(ValueError, match="raise max_seq_len"):
        cache.check_room(17)


def test_olmo2_block_is_post_norm_with_qk_norm():
    model = tiny_model("olmo2")
    blk = model.model.transformer.blocks[0]
    assert blk.norm_after and blk.self_attn.q_norm.weight.shape == (64,) and blk.self_attn.k_norm.weight.shape == (64,)
    assert blk.self_attn.att_proj.bias is None
    # Post-norm: scaling attn_norm's weight scales the attention branch's contribution exactly.
    x = torch.randn(1, 5, 64)
    pos = torch.arange(5)
    model.init_rope()
    args = (model.rope_cos[pos], model.rope_sin[pos], 0, None, None, None, None)
    with torch.no_grad():
        attn_branch = blk.attn_norm(blk.self_attn(x, *args))
        blk.attn_norm.weight.mul_(2.0)
        attn_branch2 = blk.attn_norm(blk.self_attn(x, *args))
    torch.testing.assert_close(attn_branch2, 2 * attn_branch)


def test_static_decode_step_is_one_graph():
    """The single-token step has static shapes and no data-dependent Python branches, so it can be
    torch.compile'd / CUDA-graph captured; fullgraph=True fails on any graph break."""
    model = tiny_model()
    model.init_rope()
    cache = model.allocate_cache(32)

    def step(token, pos):
        return model(model.embed(token), pos, cache, kv_len=None)[0, -1]

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    with torch.inference_mode():
        for i in range(3):
            out = compiled(torch.tensor([[7 + i]]), torch.tensor([i]))
        cache.truncate(0)
        for i in range(3):
            ref = step(torch.tensor([[7 + i]]), torch.tensor([i]))
    torch.testing.assert_close(out, ref)

"""The multimodal MolmoAct model: image features added into the LLM's token embeddings, forward with a KV cache.

Parameter names follow the checkpoint keys (``model.transformer.*``, ``model.vision_backbone.*``,
``lm_head.weight``) so loading is a key-for-key copy. Semantics that must match the reference
(checked in ``reference/molmoact-internals.md``): RMSNorm in float32 then ``weight * x``; fused
``att_proj`` rows [q; k; v]; ``ff_proj`` rows [up; gate] with ``ff_out(silu(gate) * up)``; RoPE
rotate-half; image features *added* to the ``<im_patch>`` embeddings; OLMo2 variant = post-norm with
QK-norm over the whole projection.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LlmConfig, MolmoActConfig
from .kv_cache import KVCache
from .vision import VisionBackbone


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(head_dim: int, theta: float, max_pos: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_pos, head_dim] in float32 (the reference computes them in float32)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = torch.outer(torch.arange(max_pos, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, S, D]; cos/sin [S, D] already in x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlmConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.split = (cfg.hidden_size, self.n_kv * self.head_dim, self.n_kv * self.head_dim)
        self.att_proj = nn.Linear(cfg.hidden_size, sum(self.split), bias=cfg.qkv_bias)
        self.attn_out = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.qk_norm_type = cfg.qk_norm_type if cfg.use_qk_norm else None
        if cfg.use_qk_norm:
            per_head = cfg.qk_norm_type == "qwen3"
            self.q_norm = RMSNorm(self.head_dim if per_head else cfg.hidden_size, cfg.layer_norm_eps)
            self.k_norm = RMSNorm(self.head_dim if per_head else self.n_kv * self.head_dim, cfg.layer_norm_eps)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, S, width] → q [B, heads, S, d], k and v [B, kv_heads, S, d], rotated (training code reads
        one head's attention scores from these)."""
        b, s, _ = x.shape
        q, k, v = self.att_proj(x).split(self.split, dim=-1)
        if self.qk_norm_type == "olmo":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, s, self.n_heads, self.head_dim)
        k = k.view(b, s, self.n_kv, self.head_dim)
        if self.qk_norm_type == "qwen3":
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        return q, k, v.view(b, s, self.n_kv, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                cache: KVCache | None, input_pos: torch.Tensor | None, mask: torch.Tensor | None,
                kv_len: int | None) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        gqa = self.n_heads != self.n_kv
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            cache.write(layer, input_pos, k, v)
            keys, values = cache.k[layer], cache.v[layer]
            if kv_len is not None:  # eager path: only the filled prefix; None keeps static shapes
                keys, values, mask = keys[:, :, :kv_len], values[:, :, :kv_len], mask[..., :kv_len]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=gqa)
        return self.attn_out(out.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, cfg: LlmConfig) -> None:
        super().__init__()
        self.ff_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.ff_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = self.ff_proj(x).chunk(2, dim=-1)
        return self.ff_out(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: LlmConfig) -> None:
        super().__init__()
        self.norm_after = cfg.norm_after
        self.self_attn = Attention(cfg)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.ff_norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, *attn_args) -> torch.Tensor:
        if self.norm_after:  # OLMo2: normalise each sub-layer's output
            x = x + self.attn_norm(self.self_attn(x, *attn_args))
            return x + self.ff_norm(self.mlp(x))
        x = x + self.self_attn(self.attn_norm(x), *attn_args)
        return x + self.mlp(self.ff_norm(x))


class Embedding(nn.Module):
    """Base vocabulary plus the additional rows (depth/image specials live in ``new_embedding``)."""

    def __init__(self, vocab: int, extra: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(vocab, dim))
        self.new_embedding = nn.Parameter(torch.zeros(extra, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Two lookups instead of the reference's cat(): avoids copying a 1 GB table every call at 7B.
        # No data-dependent branch, so the decode step stays capturable.
        vocab = self.embedding.shape[0]
        is_new = ids >= vocab
        base = F.embedding(ids.clamp(max=vocab - 1), self.embedding)
        new = F.embedding((ids - vocab).clamp(min=0, max=self.new_embedding.shape[0] - 1), self.new_embedding)
        return torch.where(is_new[..., None], new, base)


class Llm(nn.Module):
    def __init__(self, cfg: LlmConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = Embedding(cfg.vocab_size, cfg.additional_vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.ln_f = RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)


class _Inner(nn.Module):
    """Holds ``transformer`` and ``vision_backbone`` so keys read ``model.transformer.…``."""

    def __init__(self, cfg: MolmoActConfig) -> None:
        super().__init__()
        self.transformer = Llm(cfg.llm_config)
        self.vision_backbone = VisionBackbone(cfg)


class MolmoAct(nn.Module):
    """MolmoActForActionReasoning without the generate() machinery: embed, forward (with a cache), logits."""

    def __init__(self, cfg: MolmoActConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = _Inner(cfg)
        # Always present, as in the reference; a tied checkpoint fills it from the embedding on load.
        self.lm_head = nn.Linear(cfg.llm_config.hidden_size, cfg.llm_config.vocab_size, bias=False)
        self.rope_cos: torch.Tensor | None = None
        self.rope_sin: torch.Tensor | None = None

    # -- set-up ----------------------------------------------------------------
    def init_rope(self, max_pos: int | None = None) -> None:
        """(Re)build the RoPE tables on the parameters' device; done after weights are materialised."""
        llm = self.cfg.llm_config
        device = self.model.transformer.ln_f.weight.device
        self.rope_cos, self.rope_sin = rope_tables(llm.head_dim, llm.rope_theta,
                                                   max_pos or llm.max_position_embeddings, device)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer.ln_f.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.transformer.ln_f.weight.device

    def allocate_cache(self, max_len: int, batch: int = 1) -> KVCache:
        llm = self.cfg.llm_config
        if max_len > llm.max_position_embeddings:
            raise ValueError(f"max_len {max_len} exceeds max_position_embeddings {llm.max_position_embeddings}")
        return KVCache.allocate(llm.num_hidden_layers, llm.num_key_value_heads, llm.head_dim, max_len,
                                batch=batch, dtype=self.dtype, device=self.device)

    # -- forward pieces ----------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, crops: torch.Tensor | None = None,
              pooled_patches_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [1, S, D] with the image features added at the ``<im_patch>`` positions."""
        x = self.model.transformer.wte(input_ids)
        if crops is None:
            return x
        if input_ids.shape[0] != 1:
            raise ValueError("image inputs are supported for batch size 1")
        return self.add_image_features(x, input_ids, self.model.vision_backbone(crops, pooled_patches_idx))

    def add_image_features(self, x: torch.Tensor, input_ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """``x`` with ``feats`` (one row per ``<im_patch>`` token, in row-major token order over the batch)
        added at those tokens; the training loop calls it with a whole batch."""
        is_patch = input_ids == self.cfg.image_patch_id
        n = int(is_patch.sum())
        if n != feats.shape[0]:
            raise ValueError(f"{n} <im_patch> tokens but {feats.shape[0]} pooled image features")
        return x.index_put((is_patch,), x[is_patch] + feats.to(x.dtype))

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor | None = None,
                cache: KVCache | None = None, kv_len: int | None = None) -> torch.Tensor:
        """Hidden states after ``ln_f``. With a cache, ``input_pos`` [S] gives the absolute positions.

        ``kv_len``: eager callers pass the number of filled slots (attention over that prefix only);
        ``None`` attends over the whole cache with a mask, so shapes stay static for CUDA graphs.
        """
        s = embeds.shape[1]
        if self.rope_cos is None:
            self.init_rope()
        if input_pos is None:
            if cache is not None:
                raise ValueError("input_pos is required with a KV cache")
            input_pos = torch.arange(s, device=embeds.device)
        cos = self.rope_cos[input_pos].to(embeds.dtype)
        sin = self.rope_sin[input_pos].to(embeds.dtype)
        mask = None
        if cache is not None:
            slots = torch.arange(cache.max_len, device=embeds.device)
            mask = (slots[None, :] <= input_pos[:, None])[None, None]  # [1, 1, S, max_len]
        x = embeds
        for i, block in enumerate(self.model.transformer.blocks):
            x = block(x, cos, sin, i, cache, input_pos, mask, kv_len)
        return self.model.transformer.ln_f(x)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.output_weight)

    def logits_for(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of ``ids`` only (constrained decoding never needs the other rows)."""
        return F.linear(hidden, self.output_weight[ids])

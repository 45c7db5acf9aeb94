"""The vision side of MolmoAct: SigLIP2 tower, ViT-layer selection, 2x2 attention pooling, projector.

Written as our own modules (not transformers' ``SiglipVisionModel``) because the checkpoint stores the
tower under Molmo's names with a Linear patch embedding over (y, x, c)-flattened patches, no post-LN,
no MAP head, and only the first blocks kept; re-mapping onto transformers' classes would need weight
reshapes and would tie us to their internals. The computation is SigLIP's: pre-LN blocks, biased
q/k/v/o, gelu-tanh MLP, learned positions, no CLS. Parameter names match the checkpoint keys under
``model.vision_backbone.`` so loading is a plain ``load_state_dict``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig, MolmoActConfig, VitConfig


class MultiHeadDotProductAttention(nn.Module):
    """Bidirectional attention used both in the ViT blocks and as the 2x2 pooling (query from outside)."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 input_dim: int | None = None, float32_attention: bool = True) -> None:
        super().__init__()
        input_dim = input_dim or hidden_size
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.float32_attention = float32_attention
        self.wq = nn.Linear(input_dim, num_heads * head_dim)
        self.wk = nn.Linear(input_dim, num_kv_heads * head_dim)
        self.wv = nn.Linear(input_dim, num_kv_heads * head_dim)
        self.wo = nn.Linear(num_heads * head_dim, hidden_size)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor | None = None) -> torch.Tensor:
        x_kv = x_q if x_kv is None else x_kv
        b, sq, _ = x_q.shape
        sk = x_kv.shape[1]
        q = self.wq(x_q).view(b, sq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x_kv).view(b, sk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x_kv).view(b, sk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        dtype = q.dtype
        if self.float32_attention:  # the reference computes the softmax in float32
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.num_heads != self.num_kv_heads)
        out = out.to(dtype).transpose(1, 2).reshape(b, sq, self.num_heads * self.head_dim)
        return self.wo(out)


class VitMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)
        self.approximate = "tanh" if act == "gelu_pytorch_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x), approximate=self.approximate))


class VitBlock(nn.Module):
    def __init__(self, cfg: VitConfig) -> None:
        super().__init__()
        self.attention = MultiHeadDotProductAttention(cfg.hidden_size, cfg.num_attention_heads,
                                                      cfg.num_key_value_heads, cfg.head_dim,
                                                      float32_attention=cfg.float32_attention)
        self.feed_forward = VitMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class _Blocks(nn.Module):
    """Holds ``resblocks`` so the parameter path matches ``image_vit.transformer.resblocks.N``."""

    def __init__(self, cfg: VitConfig, n: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(VitBlock(cfg) for _ in range(n))


class VisionTransformer(nn.Module):
    """SigLIP2 tower truncated to the deepest block that the adapter reads."""

    def __init__(self, cfg: VitConfig, num_blocks: int) -> None:
        super().__init__()
        self.cfg = cfg
        patch_pixels = cfg.image_patch_size * cfg.image_patch_size * 3
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.image_num_pos, cfg.hidden_size))
        self.patch_embedding = nn.Linear(patch_pixels, cfg.hidden_size, bias=cfg.patch_bias)
        self.transformer = _Blocks(cfg, num_blocks)

    def forward(self, patches: torch.Tensor, keep: list[int]) -> list[torch.Tensor]:
        """patches [N, num_patches, 588] → hidden states after each block index in ``keep``."""
        x = self.patch_embedding(patches) + self.positional_embedding.to(patches.dtype)[None]
        wanted = set(keep)
        outs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.transformer.resblocks):
            x = block(x)
            if i in wanted:
                outs[i] = x
        return [outs[i] for i in keep]


class ImageProjector(nn.Module):
    """SwiGLU MLP from pooled ViT features into the LLM width: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.text_hidden_size, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class VisionBackbone(nn.Module):
    """Crops → one LLM-width feature per ``<im_patch>`` token."""

    def __init__(self, cfg: MolmoActConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer_indices = cfg.vit_layer_indices
        self.image_vit = VisionTransformer(cfg.vit_config, cfg.vit_layers_built)
        ad = cfg.adapter_config
        pool_dim = cfg.vit_config.hidden_size * len(self.layer_indices)
        self.image_pooling_2d = MultiHeadDotProductAttention(ad.hidden_size, ad.num_attention_heads,
                                                             ad.num_key_value_heads, ad.head_dim,
                                                             input_dim=pool_dim,
                                                             float32_attention=ad.float32_attention)
        self.image_projector = ImageProjector(ad)

    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [N, P, 588] → concatenated features of the selected ViT layers, [N*P, pool_dim]."""
        feats = self.image_vit(crops, self.layer_indices)
        return torch.cat(feats, dim=-1).reshape(-1, feats[0].shape[-1] * len(feats))

    def pool(self, features: torch.Tensor, pooled_patches_idx: torch.Tensor) -> torch.Tensor:
        """Attention-pool each group of (up to) 4 patches, query = their mean (zeros of invalid ones counted)."""
        valid = pooled_patches_idx >= 0
        to_pool = features[pooled_patches_idx.clamp(min=0)] * valid[..., None].to(features.dtype)
        query = to_pool.mean(dim=-2, keepdim=True)
        pooled = self.image_pooling_2d(query, to_pool)[:, 0]
        return pooled, valid.any(dim=-1)

    def forward(self, crops: torch.Tensor, pooled_patches_idx: torch.Tensor) -> torch.Tensor:
        """crops [N, P, 588] (one example), pooled_patches_idx [T, 4] → [T_valid, llm_width]."""
        dtype = self.image_vit.patch_embedding.weight.dtype
        features = self.encode(crops.to(dtype))
        pooled, valid_token = self.pool(features, pooled_patches_idx)
        return self.image_projector(pooled)[valid_token]

"""MolmoAct configuration, read from an official ``config.json`` without executing any checkpoint code.

The official file (written by the reference's ``convert_molmoact_to_hf.py``) nests three sub-configs:
``vit_config`` (SigLIP2 tower), ``adapter_config`` (pooling + projector) and ``llm_config`` (Qwen2.5-style
for 7B-D, OLMo2-style for 7B-O). We keep the same field names so a config round-trips unchanged.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ARCHITECTURE = "MolmoActForActionReasoning"
MODEL_TYPE = "molmoact"


class ConfigError(ValueError):
    """A config.json that we cannot run: unknown architecture, missing or inconsistent fields."""


def _take(cls, data: dict[str, Any]):
    """Build a dataclass from the keys it knows; the official file carries many HF bookkeeping keys."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in known}
    for k, v in kwargs.items():
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    return cls(**kwargs)


def read_config_json(path: str | Path) -> dict[str, Any]:
    """config.json as a dict (its MolmoAct keys and any of ours), with the errors the loader reports."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing config file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass
class VitConfig:
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 72
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    image_default_input_size: tuple[int, int] = (378, 378)
    image_patch_size: int = 14
    image_num_pos: int = 729
    float32_attention: bool = True
    use_cls_token: bool = False
    patch_bias: bool = True
    pre_layernorm: bool = False

    def __post_init__(self) -> None:
        if self.use_cls_token or self.pre_layernorm:
            raise ConfigError("vit_config: CLS token / pre-LayerNorm (OpenCLIP towers) are not supported; "
                              "MolmoAct v1 uses SigLIP2 without them")
        if self.hidden_act not in ("gelu_pytorch_tanh", "gelu"):
            raise ConfigError(f"vit_config.hidden_act={self.hidden_act!r} is not supported")
        h, w = self.image_default_input_size
        if h % self.image_patch_size or w % self.image_patch_size:
            raise ConfigError("vit_config: image size must be a multiple of the patch size")
        if self.num_patches != self.image_num_pos:
            raise ConfigError(f"vit_config: image_num_pos={self.image_num_pos} but the input size gives "
                              f"{self.num_patches} patches (position interpolation is not supported)")
        if self.num_attention_heads * self.head_dim != self.hidden_size:
            raise ConfigError("vit_config: num_attention_heads * head_dim must equal hidden_size")

    @property
    def patch_grid(self) -> tuple[int, int]:
        h, w = self.image_default_input_size
        return h // self.image_patch_size, w // self.image_patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.patch_grid
        return gh * gw


@dataclass
class AdapterConfig:
    vit_layers: tuple[int, ...] = (-3, -9)
    hidden_size: int = 1152
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 72
    float32_attention: bool = True
    hidden_act: str = "silu"
    intermediate_size: int = 18944
    text_hidden_size: int = 3584
    image_padding_embed: str | None = None

    def __post_init__(self) -> None:
        if self.image_padding_embed is not None:
            raise ConfigError(f"adapter_config.image_padding_embed={self.image_padding_embed!r} is not supported "
                              "(MolmoAct v1 SigLIP checkpoints have none)")
        if self.hidden_act != "silu":
            raise ConfigError(f"adapter_config.hidden_act={self.hidden_act!r} is not supported")


@dataclass
class LlmConfig:
    hidden_size: int = 3584
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    head_dim: int = 128
    vocab_size: int = 152064
    additional_vocab_size: int = 128
    qkv_bias: bool = True
    num_hidden_layers: int = 28
    intermediate_size: int = 18944
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    rope_theta: float = 1_000_000.0
    rope_scaling: dict[str, Any] | None = None
    use_qk_norm: bool = False
    qk_norm_type: str = "olmo"
    layer_norm_eps: float = 1e-6
    norm_after: bool = False

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.num_attention_heads * self.head_dim != self.hidden_size:
            raise ConfigError("llm_config: num_attention_heads * head_dim must equal hidden_size")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("llm_config: num_attention_heads must be a multiple of num_key_value_heads")
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if rope_type not in (None, "default"):
                raise ConfigError(f"llm_config.rope_scaling type {rope_type!r} is not supported")
        if self.qk_norm_type not in ("olmo", "qwen3"):
            raise ConfigError(f"llm_config.qk_norm_type={self.qk_norm_type!r} is not supported")
        if self.hidden_act != "silu":
            raise ConfigError(f"llm_config.hidden_act={self.hidden_act!r} is not supported")

    @property
    def variant(self) -> str:
        """'olmo2' (post-norm, QK-norm) or 'qwen2' (pre-norm, QKV bias): the two v1 LLM families."""
        return "olmo2" if self.norm_after else "qwen2"


@dataclass
class MolmoActConfig:
    vit_config: VitConfig = field(default_factory=VitConfig)
    adapter_config: AdapterConfig = field(default_factory=AdapterConfig)
    llm_config: LlmConfig = field(default_factory=LlmConfig)
    image_patch_id: int = 152066
    n_action_bins: int = 256
    norm_stats: dict[str, Any] = field(default_factory=dict)
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        vit, ad, llm = self.vit_config, self.adapter_config, self.llm_config
        for layer in ad.vit_layers:
            if not -vit.num_hidden_layers <= layer < vit.num_hidden_layers:
                raise ConfigError(f"adapter_config.vit_layers has {layer}, outside a "
                                  f"{vit.num_hidden_layers}-layer ViT")
        if ad.text_hidden_size != llm.hidden_size:
            raise ConfigError("adapter_config.text_hidden_size must equal llm_config.hidden_size")
        total = llm.vocab_size + (llm.additional_vocab_size or 0)
        if not llm.vocab_size <= self.image_patch_id < total:
            raise ConfigError(f"image_patch_id={self.image_patch_id} must be one of the additional embeddings "
                              f"[{llm.vocab_size}, {total})")

    # -- derived -----------------------------------------------------------------
    @property
    def vit_layer_indices(self) -> list[int]:
        """ViT blocks whose outputs are concatenated, as non-negative indices in config order."""
        n = self.vit_config.num_hidden_layers
        return [layer if layer >= 0 else layer + n for layer in self.adapter_config.vit_layers]

    @property
    def vit_layers_built(self) -> int:
        """The reference builds only the blocks up to the deepest one it reads."""
        return max(self.vit_layer_indices) + 1

    @property
    def variant(self) -> str:
        return self.llm_config.variant

    # -- (de)serialisation -------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "MolmoActConfig":
        archs = data.get("architectures") or []
        model_type = data.get("model_type")
        if model_type != MODEL_TYPE or (archs and ARCHITECTURE not in archs):
            raise ConfigError(f"{source}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
                              f"expected model_type {MODEL_TYPE!r} / {ARCHITECTURE}")
        for key in ("vit_config", "adapter_config", "llm_config"):
            if not isinstance(data.get(key), dict):
                raise ConfigError(f"{source}: missing {key!r}")
        try:
            return cls(
                vit_config=_take(VitConfig, data["vit_config"]),
                adapter_config=_take(AdapterConfig, data["adapter_config"]),
                llm_config=_take(LlmConfig, data["llm_config"]),
                image_patch_id=int(data["image_patch_id"]),
                n_action_bins=int(data.get("n_action_bins", 256)),
                norm_stats=dict(data.get("norm_stats") or {}),
                tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            )
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{source}: invalid MolmoAct config ({e!r})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "MolmoActConfig":
        return cls.from_dict(read_config_json(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The official layout (plus the HF bookkeeping keys the reference writes)."""
        def sub(obj, model_type: str | None) -> dict[str, Any]:
            d = asdict(obj)
            for k, v in d.items():
                if isinstance(v, tuple):
                    d[k] = list(v)
            if model_type:
                d["model_type"] = model_type
            return d
        return {
            "architectures": [ARCHITECTURE],
            "model_type": MODEL_TYPE,
            "vit_config": sub(self.vit_config, "molmoact_vit"),
            "adapter_config": sub(self.adapter_config, None),
            "llm_config": sub(self.llm_config, "molmoact_llm"),
            "image_patch_id": self.image_patch_id,
            "n_action_bins": self.n_action_bins,
            "norm_stats": self.norm_stats,
            "tie_word_embeddings": self.tie_word_embeddings,
        }


# -- shapes we build ourselves ----------------------------------------------------
def shape_7b_d() -> MolmoActConfig:
    """The real MolmoAct-7B-D shape: Qwen2.5-7B + SigLIP2 so400m/14-384 (derived from the reference code)."""
    return MolmoActConfig()


def shape_7b_o() -> MolmoActConfig:
    """The OLMo2-7B variant (7B-O): post-norm blocks, QK-norm, no QKV bias."""
    llm = LlmConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                    vocab_size=100352, qkv_bias=False, num_hidden_layers=32, intermediate_size=11008,
                    rope_theta=500_000.0, use_qk_norm=True, qk_norm_type="olmo", norm_after=True)
    return MolmoActConfig(adapter_config=AdapterConfig(intermediate_size=11008, text_hidden_size=4096),
                          llm_config=llm, image_patch_id=100352 + 2)


def tiny_config(variant: str = "qwen2", vocab_size: int = 768, width: int = 64,
                vit_width: int = 64, llm_layers: int = 2, vit_layers: int = 9,
                norm_stats: dict[str, Any] | None = None) -> MolmoActConfig:
    """A small random-weight shape with the real 378/14 geometry, for tests and the embedded default.

    ``vit_layers`` blocks are configured and (-3, -9) are read, so the reference's "build only up to
    the deepest layer read" rule is exercised (9 configured, 7 built).
    """
    heads = 4
    vit = VitConfig(hidden_size=vit_width, intermediate_size=2 * vit_width, num_hidden_layers=vit_layers,
                    num_attention_heads=heads, num_key_value_heads=heads, head_dim=vit_width // heads)
    adapter = AdapterConfig(hidden_size=vit_width, num_attention_heads=heads, num_key_value_heads=heads,
                            head_dim=vit_width // heads, intermediate_size=2 * width, text_hidden_size=width)
    olmo = variant == "olmo2"
    if variant not in ("qwen2", "olmo2"):
        raise ConfigError(f"unknown tiny variant {variant!r}")
    llm = LlmConfig(hidden_size=width, num_attention_heads=heads, num_key_value_heads=heads if olmo else 2,
                    head_dim=width // heads, vocab_size=vocab_size, additional_vocab_size=128,
                    qkv_bias=not olmo, num_hidden_layers=llm_layers, intermediate_size=2 * width,
                    max_position_embeddings=4096, use_qk_norm=olmo, norm_after=olmo,
                    rope_theta=500_000.0 if olmo else 1_000_000.0)
    return MolmoActConfig(vit_config=vit, adapter_config=adapter, llm_config=llm,
                          image_patch_id=vocab_size + 2, norm_stats=dict(norm_stats or {}))

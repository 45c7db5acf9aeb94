"""Decoder half of MolmoAct's depth VQ-VAE: turns predicted depth codes into a depth map.

MolmoAct emits its "depth perception" as a grid of codebook indices (10x10 for the
reference model).  Only the decoder is needed to visualise them, so the encoder and the
EMA training buffers of the official checkpoint are ignored on load.

The output is *relative* depth (Depth-Anything style: brighter = nearer), not metres.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

EMBEDDING_KEY = "_vq_vae._embedding"
# Some VQ implementations store the codebook as an nn.Embedding; accept that spelling too.
_EMBEDDING_ALIASES = (EMBEDDING_KEY, EMBEDDING_KEY + ".weight")
_PREFIX = "module."
CONFIG_METADATA_KEY = "depth_vqvae_config"


@dataclass(frozen=True)
class DepthVQVAEConfig:
    """Architecture of the depth VQ-VAE; defaults reproduce the reference checkpoint."""

    image_size: int = 320
    num_tokens: int = 128
    codebook_dim: int = 512
    hidden_dim: int = 16
    downsample_ratio: int = 32
    num_resnet_blocks: int = 2
    channels: int = 1

    def __post_init__(self) -> None:
        ratio = self.downsample_ratio
        if ratio < 2 or ratio & (ratio - 1):
            raise ValueError(f"downsample_ratio must be a power of two >= 2, got {ratio}")
        if self.image_size % ratio:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by downsample_ratio {ratio}"
            )
        if (self.hidden_dim * ratio) // 2 < 2 ** self.layer_num:
            raise ValueError("hidden_dim too small: channels would halve below 1")
        for name in ("num_tokens", "codebook_dim", "hidden_dim", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.num_resnet_blocks < 0:
            raise ValueError("num_resnet_blocks must be >= 0")

    @property
    def grid(self) -> tuple[int, int]:
        """Code grid (rows, cols) the decoder consumes."""
        side = self.image_size // self.downsample_ratio
        return side, side

    @property
    def width(self) -> int:
        """Channel width right after the codebook projection."""
        return self.hidden_dim * self.downsample_ratio // 2

    @property
    def layer_num(self) -> int:
        """Number of channel-halving transposed convs after the first one."""
        return int(math.log2(self.downsample_ratio)) - 1


class ResBlock(nn.Module):
    """Residual block ("v1"): conv3-relu-conv3-relu-conv1, plus identity."""

    def __init__(self, chan: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


def _build_decoder_stack(cfg: DepthVQVAEConfig) -> nn.Sequential:
    """Layer order must match the checkpoint's `decoder.<idx>` numbering exactly."""
    dim = cfg.width
    layers: list[nn.Module] = [nn.Conv2d(cfg.codebook_dim, dim, 1), nn.ReLU()]
    layers += [ResBlock(dim) for _ in range(cfg.num_resnet_blocks)]
    layers += [nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1), nn.ReLU()]
    chan = dim
    for _ in range(cfg.layer_num):
        layers += [nn.ConvTranspose2d(chan, chan // 2, 4, stride=2, padding=1), nn.ReLU()]
        chan //= 2
    layers.append(nn.Conv2d(chan, cfg.channels, 1))
    return nn.Sequential(*layers)


class _Quantizer(nn.Module):
    """Holds only the codebook, under the checkpoint's `_vq_vae._embedding` name."""

    def __init__(self, num_tokens: int, codebook_dim: int) -> None:
        super().__init__()
        self.register_buffer("_embedding", torch.zeros(num_tokens, codebook_dim))


class DepthDecoder(nn.Module):
    """Codebook lookup + convolutional decoder of MolmoAct's depth VQ-VAE."""

    def __init__(self, config: DepthVQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or DepthVQVAEConfig()
        self._vq_vae = _Quantizer(self.config.num_tokens, self.config.codebook_dim)
        self.decoder = _build_decoder_stack(self.config)

    @property
    def codebook(self) -> torch.Tensor:
        return self._vq_vae._embedding

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode [B, H, W] integer codes into [B, channels, image_size, image_size]."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, H, W], got shape {tuple(codes.shape)}")
        _check_code_range(codes, self.config.num_tokens)
        codebook = self.codebook
        latents = codebook[codes.to(device=codebook.device, dtype=torch.long)]
        latents = latents.permute(0, 3, 1, 2).contiguous()  # BHWC -> BCHW
        return self.decoder(latents)


def _check_code_range(codes: torch.Tensor, num_tokens: int) -> None:
    if codes.numel() == 0:
        raise ValueError("no depth codes to decode")
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= num_tokens:
        bad = lo if lo < 0 else hi
        raise ValueError(f"depth code {bad} out of range [0, {num_tokens})")


# ---------------------------------------------------------------------------- loading


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """Read raw tensors from .safetensors or a torch pickle (weights_only: no code runs)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad header, unsafe pickle, ...
        raise ValueError(f"{path} is not a readable depth VQ-VAE checkpoint: {exc}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("weights"), Mapping):
        obj = obj["weights"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not contain a state dict of tensors")
    return obj


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel/DDP checkpoints prefix every key with `module.`."""
    return {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state.items()}


def _select_decoder_state(
    state: Mapping[str, torch.Tensor], model: DepthDecoder, path: Path
) -> dict[str, torch.Tensor]:
    """Pick the keys the decoder needs; report every missing/mis-shaped key at once."""
    state = dict(state)
    for alias in _EMBEDDING_ALIASES[1:]:
        if EMBEDDING_KEY not in state and alias in state:
            state[EMBEDDING_KEY] = state[alias]
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    wrong = [
        f"{k} (expected {tuple(v.shape)}, got {tuple(state[k].shape)})"
        for k, v in wanted.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if wrong:
        problems.append("mis-shaped keys: " + ", ".join(wrong))
    if problems:
        raise ValueError(f"{path}: not a depth decoder for {model.config}; " + "; ".join(problems))
    return {k: state[k].float() for k in wanted}


def _stored_config(path: Path) -> DepthVQVAEConfig | None:
    """The architecture saved in a .safetensors file's metadata by ``save_depth_decoder``, if any."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(CONFIG_METADATA_KEY)
        return DepthVQVAEConfig(**json.loads(meta)) if meta else None
    except Exception as exc:
        raise ValueError(f"{path} is not a readable depth VQ-VAE checkpoint: {exc}") from exc


def load_depth_decoder(
    path: str | Path, device: str | torch.device = "cpu", config: DepthVQVAEConfig | None = None
) -> DepthDecoder:
    """Load the decoder from `vae-final.pt` (or a .safetensors with the same keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth VQ-VAE checkpoint not found: {path}")
    state = _strip_prefix(_read_state_dict(path))
    model = DepthDecoder(config or _stored_config(path))
    model.load_state_dict(_select_decoder_state(state, model, path))
    return model.to(device).eval()


def save_depth_decoder(decoder: DepthDecoder, path: str | Path, official_pt: bool = False) -> Path:
    """Write the decoder with official key names.

    `.safetensors` by default; with `official_pt=True` a torch pickle in the official
    `{'weights': state_dict}` layout (keys `module.`-prefixed like the DDP original).
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    if official_pt:
        torch.save({"weights": {_PREFIX + k: v for k, v in state.items()}}, str(path))
    else:
        from safetensors.torch import save_file

        # Our own (smaller) decoders carry their architecture; the official .pt is the reference config.
        save_file(state, str(path), metadata={CONFIG_METADATA_KEY: json.dumps(asdict(decoder.config))})
    return path


def random_depth_decoder(config: DepthVQVAEConfig | None = None, seed: int = 0) -> DepthDecoder:
    """Deterministically initialised decoder, for tests and UI work without the checkpoint."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = DepthDecoder(config)
        model._vq_vae._embedding.normal_()
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


# ---------------------------------------------------------------------------- decoding


@dataclass
class DepthMap:
    """One decoded depth image."""

    relative: np.ndarray  # float32 [H, W], raw decoder output (relative depth)
    normalized: np.ndarray  # float32 [H, W], min-max scaled to [0, 1]
    codes_used: list[int] = field(default_factory=list)


def _check_code_list(codes: Sequence[int], num_tokens: int) -> None:
    """Validate every given code, including ones that clipping would drop."""
    bad = [int(c) for c in codes if not 0 <= int(c) < num_tokens]
    if bad:
        raise ValueError(
            f"{len(bad)} depth code(s) out of range [0, {num_tokens}), first: {bad[0]}"
        )


def fit_codes(codes: Sequence[int], count: int) -> list[int]:
    """Pad with code 0 (as MolmoAct's visualiser does) or clip to `count`, warning if so."""
    codes = [int(c) for c in codes]
    if len(codes) != count:
        action = "padding with code 0" if len(codes) < count else "clipping"
        warnings.warn(
            f"got {len(codes)} depth codes, expected {count}; {action}", stacklevel=3
        )
    return (codes + [0] * count)[:count]


def normalize_minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant (or non-finite-range) map becomes zeros, never NaN."""
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if not np.isfinite(span) or span <= 0.0:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - lo) / span, 0.0, 1.0).astype(np.float32)


def decode_depth_codes(
    decoder: DepthDecoder, codes: Sequence[int], grid: tuple[int, int] | None = None
) -> DepthMap:
    """Decode a flat list of depth codes (row-major) into a DepthMap."""
    grid = grid or decoder.config.grid
    if tuple(grid) != decoder.config.grid:
        raise ValueError(f"grid {tuple(grid)} does not match decoder grid {decoder.config.grid}")
    rows, cols = grid
    _check_code_list(codes, decoder.config.num_tokens)
    used = fit_codes(codes, rows * cols)
    device = decoder.codebook.device
    tensor = torch.tensor(used, dtype=torch.long, device=device).view(1, rows, cols)
    with torch.inference_mode():
        out = decoder.decode(tensor)
    relative = out[0, 0].float().cpu().numpy().astype(np.float32)
    return DepthMap(relative=relative, normalized=normalize_minmax(relative), codes_used=used)


__all__ = [
    "DepthVQVAEConfig",
    "DepthDecoder",
    "DepthMap",
    "ResBlock",
    "decode_depth_codes",
    "fit_codes",
    "load_depth_decoder",
    "normalize_minmax",
    "random_depth_decoder",
    "save_depth_decoder",
]

"""Load official MolmoAct checkpoints (and write tiny random ones in the same file layout).

Loading never executes checkpoint code: ``config.json`` is parsed as data, weights come from
safetensors only, the tokenizer from ``tokenizer.json``. The model is built on the meta device and each
tensor is read once, straight to its device and dtype, then assigned (no double allocation). Every
problem raises one ``CheckpointError``/``FileNotFoundError`` naming the file or key, and nothing partially
loaded is returned: the caller keeps whatever it had until a load completes.

Command line: ``python -m model.checkpoint write-tiny DIR [--variant qwen2|olmo2] [--seed N]``
and ``python -m model.checkpoint inspect DIR``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .actions import ActionStats, ActionTokenizer
from .config import ConfigError, MolmoActConfig, read_config_json, tiny_config
from .depth import DepthDecoder, load_depth_decoder
from .molmoact import MolmoAct
from .processor import MolmoActProcessor
from .tokenizer import MolmoActTokenizer, TokenizerError, build_tiny_tokenizer, save_tokenizer

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEPTH_FILES = ("vae-final.safetensors", "vae-final.pt")
IGNORED_KEY_SUFFIXES = ("rotary_emb.inv_freq",)

# Real statistics of the Google-robot (fractal) data, as MolmoAct-7B-D-Pretrain ships them.
FRACTAL_NORM_STATS = {"fractal20220817_data": {"action": {
    "q01": [-0.22453527510166169, -0.14820013284683228, -0.231589707583189, -0.3517994859814644,
            -0.4193011274933815, -0.43643461108207704, 0.0],
    "q99": [0.17824687153100965, 0.14938379630446405, 0.21842354819178575, 0.5892666035890578,
            0.35272657424211445, 0.44796681255102094, 1.0],
    "mask": [True, True, True, True, True, True, False]}}}


class CheckpointError(ValueError):
    """A checkpoint directory we cannot load; the message names the file or key."""


@dataclass
class LoadedCheckpoint:
    path: Path
    config: MolmoActConfig
    model: MolmoAct
    tokenizer: MolmoActTokenizer
    processor: MolmoActProcessor
    depth_decoder: DepthDecoder | None
    cameras: tuple[str, ...] = ("front",)   # which camera each image is, in prompt order (first = trace image)
    training: dict[str, Any] | None = None  # how app.sim.train made it (our key; None for other checkpoints)

    @property
    def model_id(self) -> str:
        return self.path.name

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.config.norm_stats

    @property
    def action_tokenizer(self) -> ActionTokenizer:
        return ActionTokenizer(base_id=self.tokenizer.action_base_id, n_bins=self.config.n_action_bins)

    def action_stats(self, unnorm_key: str | None) -> ActionStats:
        return ActionStats.from_norm_stats(self.config.norm_stats, unnorm_key)


def default_dtype(device: torch.device | str) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def shard_files(path: Path) -> list[Path]:
    """The safetensors files named by the index (sharded) or the single ``model.safetensors``."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index ({e!r})") from None
        files = [path / name for name in dict.fromkeys(weight_map.values())]
    elif (path / SINGLE_FILE).is_file():
        files = [path / SINGLE_FILE]
    else:
        raise FileNotFoundError(f"missing weights: neither {index} nor {path / SINGLE_FILE} exists")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"missing weight shard: {f} (listed in {index})")
    return files


def map_key(key: str) -> str | None:
    """Checkpoint key → our parameter name (identity by design); None for keys we deliberately skip."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key.endswith(IGNORED_KEY_SUFFIXES):
        return None
    return key


def read_state_dict(files: list[Path], expected: dict[str, torch.Size], device: torch.device,
                    dtype: torch.dtype, tie_word_embeddings: bool = False) -> dict[str, torch.Tensor]:
    """Read every expected tensor once, checking names and shapes as we go."""
    state: dict[str, torch.Tensor] = {}
    where: dict[str, Path] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for raw_key in f.keys():
                    key = map_key(raw_key)
                    if key is None:
                        continue
                    if key not in expected:
                        raise CheckpointError(f"{file}: unexpected key {raw_key!r} (not part of a MolmoAct model "
                                              "of this config)")
                    if key in state:
                        raise CheckpointError(f"{file}: key {raw_key!r} also appears in {where[key]}")
                    shape = tuple(f.get_slice(raw_key).get_shape())
                    if shape != tuple(expected[key]):
                        raise CheckpointError(f"{file}: shape mismatch for {raw_key!r}: checkpoint has "
                                              f"{list(shape)}, config implies {list(expected[key])}")
                    state[key] = f.get_tensor(raw_key).to(dtype)
                    where[key] = file
        except SafetensorError as e:
            raise CheckpointError(f"{file}: unreadable safetensors file, truncated or corrupt ({e})") from None
        except OSError as e:
            raise CheckpointError(f"{file}: cannot read ({e})") from None
    tied = "model.transformer.wte.embedding"
    if "lm_head.weight" not in state and tie_word_embeddings and tied in state:
        state["lm_head.weight"] = state[tied]   # tied checkpoints may store the matrix once
    missing = [k for k in expected if k not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"{files[0].parent}: missing keys in the weights: {shown}")
    return state


def meta_model(cfg: MolmoActConfig) -> MolmoAct:
    """The module tree without storage: its state dict names every key and shape the weights must have."""
    with torch.device("meta"):
        return MolmoAct(cfg)


def expected_shapes(cfg: MolmoActConfig) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in meta_model(cfg).state_dict().items()}


def build_model(model: MolmoAct, state: dict[str, torch.Tensor]) -> MolmoAct:
    """Assign the read tensors to a meta model (no second allocation)."""
    model.load_state_dict(state, strict=True, assign=True)
    model.init_rope()
    return model.eval().requires_grad_(False)


def check_norm_stats(norm_stats: dict[str, Any], source: Path) -> None:
    """Every unnorm key must give usable statistics; fail at load, naming the key, not at the first step."""
    for key in norm_stats:
        try:
            stats = ActionStats.from_norm_stats(norm_stats, key)
            if not (len(stats.q01) == len(stats.q99) == len(stats.mask)):
                raise ValueError("q01, q99 and mask differ in length")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: norm_stats[{key!r}] is malformed ({e})") from None


def check_image_geometry(cfg: MolmoActConfig, processor: MolmoActProcessor, path: Path) -> None:
    ic, vit = processor.image_config, cfg.vit_config
    if tuple(ic.base_image_input_size) != tuple(vit.image_default_input_size) or \
            ic.image_patch_size != vit.image_patch_size:
        raise CheckpointError(f"{path / 'preprocessor_config.json'}: crops of {tuple(ic.base_image_input_size)} px "
                              f"/ patch {ic.image_patch_size} do not fit the ViT's "
                              f"{tuple(vit.image_default_input_size)} px / patch {vit.image_patch_size}")


def find_depth_file(path: Path) -> Path | None:
    for name in DEPTH_FILES:
        if (path / name).is_file():
            return path / name
    return None


def cameras_of_config(raw: dict[str, Any], config_path: Path) -> tuple[str, ...]:
    """The images the model was trained on, from config.json's ``cameras`` (our key; the official
    checkpoints do not say, and the station then feeds its one camera)."""
    cameras = raw.get("cameras", ["front"])
    if (not isinstance(cameras, list) or not cameras or not all(isinstance(c, str) and c for c in cameras)
            or len(set(cameras)) != len(cameras)):
        raise CheckpointError(f"{config_path}: 'cameras' must be a list of distinct camera names, got {cameras!r}")
    return tuple(cameras)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    load_depth: bool = True) -> LoadedCheckpoint:
    """Load config, tokenizer, processor, weights and (if present) the depth decoder of a checkpoint dir."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"--model.device {device} requested but no CUDA GPU is available here")
    dtype = dtype or default_dtype(device)
    raw = read_config_json(path / "config.json")
    cfg = MolmoActConfig.from_dict(raw, source=str(path / "config.json"))
    check_norm_stats(cfg.norm_stats, path / "config.json")
    cameras = cameras_of_config(raw, path / "config.json")
    tokenizer = MolmoActTokenizer.from_dir(path)
    if tokenizer.ids.im_patch != cfg.image_patch_id:
        raise CheckpointError(f"{path / 'tokenizer.json'}: <im_patch> is id {tokenizer.ids.im_patch} but "
                              f"config.json says image_patch_id={cfg.image_patch_id}")
    if tokenizer.vocab_size_with_added() > cfg.llm_config.vocab_size + cfg.llm_config.additional_vocab_size:
        raise CheckpointError(f"{path / 'tokenizer.json'}: vocabulary larger than the model's embeddings")
    processor = MolmoActProcessor.from_dir(path, tokenizer)
    check_image_geometry(cfg, processor, path)
    files = shard_files(path)
    model = meta_model(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = read_state_dict(files, expected, device, dtype, cfg.tie_word_embeddings)
    model = build_model(model, state)
    depth = None
    if load_depth:
        depth_file = find_depth_file(path)
        if depth_file is None:
            warnings.warn(f"{path}: no depth decoder ({' or '.join(DEPTH_FILES)}); depth maps will not be decoded")
        else:
            try:
                depth = load_depth_decoder(depth_file)
            except ValueError as e:
                raise CheckpointError(str(e)) from None
    return LoadedCheckpoint(path=path, config=cfg, model=model, tokenizer=tokenizer, processor=processor,
                            depth_decoder=depth, cameras=cameras, training=raw.get("training"))


# -- random weights ------------------------------------------------------------------------
@torch.no_grad()
def init_random_(model: MolmoAct, seed: int, std: float = 0.02, scale_residual: bool = False) -> MolmoAct:
    """Deterministic random weights: N(0, std) matrices, zero biases, unit norm weights.

    ``scale_residual`` (GPT-2 style, for training from scratch): the LLM's residual-branch outputs
    (``attn_out``, ``ff_out``) get std / sqrt(2 * layers), so the residual stream does not grow with depth.
    Sampled on each parameter's own device (8B numbers drawn on a CPU would take minutes for a GPU run).
    """
    residual_std = std / math.sqrt(2 * model.cfg.llm_config.num_hidden_layers) if scale_residual else std
    gens: dict[torch.device, torch.Generator] = {}
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight") or "_norm." in name:
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            gen = gens.get(p.device)
            if gen is None:
                gen = gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            scale = residual_std if name.endswith(("attn_out.weight", "ff_out.weight")) else std
            sample = torch.randn(p.shape, generator=gen, dtype=torch.float32, device=p.device) * scale
            p.copy_(sample.to(p.dtype))
    return model


def random_model(cfg: MolmoActConfig, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 seed: int = 0) -> MolmoAct:
    """A random-weight model allocated directly on ``device`` (for benchmarks at the real 7B shape)."""
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    model = init_random_(meta_model(cfg).to(dtype).to_empty(device=device), seed)   # cast on meta: no fp32 copy
    model.init_rope()
    return model.eval().requires_grad_(False)


# -- writing -------------------------------------------------------------------------------
def save_weights(state: dict[str, torch.Tensor], out_dir: Path, shards: int = 2) -> None:
    """The official sharded layout: model-0000k-of-0000n.safetensors + model.safetensors.index.json."""
    keys = list(state)
    shards = max(1, min(shards, len(keys)))
    per = -(-len(keys) // shards)
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[s * per:(s + 1) * per]}
        save_file(part, str(out_dir / name), metadata={"format": "pt"})
        for k, t in part.items():
            weight_map[k] = name
            total += t.numel() * t.element_size()
    (out_dir / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                 indent=2))


def preprocessor_config_dict() -> dict[str, Any]:
    """The official ``preprocessor_config.json`` keys with the reference defaults."""
    return {"image_processor_type": "MolmoActImageProcessor", "crop_mode": "overlap-and-resize-c2",
            "resize_mode": "siglip", "normalize_mode": "siglip", "max_crops": 8, "max_multi_image_crops": 4,
            "overlap_margins": [4, 4], "base_image_input_size": [378, 378], "pad_value": 0.0,
            "image_patch_size": 14, "image_pooling_w": 2, "image_pooling_h": 2, "do_convert_rgb": True,
            "do_pad": True}


def write_tiny_checkpoint(out_dir: str | Path, variant: str = "qwen2", seed: int = 0, shards: int = 2,
                          norm_stats: dict[str, Any] | None = None, with_depth: bool = True,
                          std: float = 0.2) -> Path:
    """A random-weight checkpoint in the official layout, loadable by ``load_checkpoint``.

    ``std`` 0.2 (not the usual 0.02 init) so that the random model's answers depend on the image and on
    a forced trace: with 0.02 every answer is the same and caching/steering tests could not fail.
    """
    from .depth import DepthVQVAEConfig, random_depth_decoder, save_depth_decoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(bpe_vocab=512, embedding_size=768)
    cfg = tiny_config(variant=variant, vocab_size=768, norm_stats=norm_stats or FRACTAL_NORM_STATS)
    cfg.image_patch_id = tok.token_to_id("<im_patch>")
    torch.manual_seed(seed)
    model = init_random_(MolmoAct(cfg), seed, std=std)
    state = {k: v for k, v in model.state_dict().items()}
    save_weights(state, out, shards=shards)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config_dict(), indent=2))
    save_tokenizer(tok, out)
    if with_depth:
        decoder = random_depth_decoder(DepthVQVAEConfig(hidden_dim=2), seed=seed)
        save_depth_decoder(decoder, out / DEPTH_FILES[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-tiny", help="write a tiny random checkpoint in the official layout")
    w.add_argument("out_dir")
    w.add_argument("--variant", choices=["qwen2", "olmo2"], default="qwen2")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--shards", type=int, default=2)
    i = sub.add_parser("inspect", help="load a checkpoint and print a one-line summary")
    i.add_argument("path")
    i.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "write-tiny":
            out = write_tiny_checkpoint(args.out_dir, variant=args.variant, seed=args.seed, shards=args.shards)
            print(f"wrote {out}")
        else:
            ck = load_checkpoint(args.path, device=args.device)
            n = sum(p.numel() for p in ck.model.parameters())
            print(json.dumps({"path": str(ck.path), "variant": ck.config.variant, "parameters": n,
                              "dtype": str(ck.model.dtype), "norm_stats": sorted(ck.norm_stats),
                              "depth_decoder": ck.depth_decoder is not None}))
    except (FileNotFoundError, CheckpointError, ConfigError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the runtime: prefill, decode ms/token, reason(), steer_visual(), steer_text().

    python -m model.bench [--device cpu|cuda] [--shape tiny|7b|7b-mini] [--model.path DIR] [--json]

The bandwidth floor is the time to read, once, the weight bytes a decode step needs (LLM blocks +
the allowed LM-head rows) at the measured device copy bandwidth.
``tiny``: the tiny checkpoint (written to a temp dir unless ``--model.path`` is given), float32.
``7b``: random weights in the real MolmoAct-7B-D shape and id layout (bf16 on CUDA).
``7b-mini``: the same code path as ``7b`` (random weights, Qwen id layout, full 152k vocabulary)
at a small width/depth, so the GPU mode can be exercised on a CPU.
Times are medians in ms over ``--repeats`` runs in one process, after one warm-up.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (FRACTAL_NORM_STATS, LoadedCheckpoint, load_checkpoint, random_model,
                         write_tiny_checkpoint)
from .config import AdapterConfig, LlmConfig, MolmoActConfig, VitConfig, shape_7b_d
from .decoder import MolmoActDecoder
from .depth import random_depth_decoder
from .processor import MolmoActProcessor, reasoning_prompt
from .reasoning import Observation
from .tokenizer import MolmoActTokenizer, build_tiny_tokenizer


def mini_7b_shape() -> MolmoActConfig:
    """7B-D's structure (GQA 7:1, Qwen vocab, ViT layer selection) at a CPU-friendly size."""
    vit = VitConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=27, num_attention_heads=2,
                    num_key_value_heads=2, head_dim=64)
    adapter = AdapterConfig(hidden_size=128, num_attention_heads=2, num_key_value_heads=2, head_dim=64,
                            intermediate_size=512, text_hidden_size=448)
    llm = LlmConfig(hidden_size=448, num_attention_heads=7, num_key_value_heads=1, head_dim=64,
                    num_hidden_layers=4, intermediate_size=1024)
    return MolmoActConfig(vit_config=vit, adapter_config=adapter, llm_config=llm)


def random_checkpoint(cfg: MolmoActConfig, device: str, name: str) -> LoadedCheckpoint:
    cfg = dataclasses.replace(cfg, norm_stats=FRACTAL_NORM_STATS)
    tok = MolmoActTokenizer(build_tiny_tokenizer(bpe_vocab=151643, embedding_size=152064, chat_specials=21),
                            source=f"{name} tokenizer")
    model = random_model(cfg, device=device)
    return LoadedCheckpoint(path=Path(name), config=cfg, model=model, tokenizer=tok,
                            processor=MolmoActProcessor(tok), depth_decoder=random_depth_decoder())


def copy_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Measured device memory bandwidth (read + write) of a large tensor copy."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / statistics.median(times) / 1e9


def decode_step_bytes(ck: LoadedCheckpoint, allowed_rows: int) -> int:
    """Weight bytes one decode step must read: the LLM blocks and final norm, plus the LM-head rows of
    the allowed ids (the vision tower and the embedding table, but one row, are not touched)."""
    llm = ck.model.model.transformer
    dense = list(llm.blocks.parameters()) + list(llm.ln_f.parameters())
    head = ck.model.output_weight
    return sum(p.numel() * p.element_size() for p in dense) + allowed_rows * head.shape[1] * head.element_size()


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(device: str = "cpu", shape: str = "tiny", model_path: str | None = None, repeats: int = 5,
        decode_tokens: int = 32, seed: int = 0) -> dict:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA GPU is available")
    if model_path:
        ck = load_checkpoint(model_path, device=dev)
    elif shape == "tiny":
        ck = load_checkpoint(write_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny-molmoact"), device=dev)
    elif shape == "7b":
        ck = random_checkpoint(shape_7b_d(), device, "random-7b-d")
    elif shape == "7b-mini":
        ck = random_checkpoint(mini_7b_shape(), device, "random-7b-d-mini")
    else:
        raise SystemExit(f"error: unknown shape {shape!r}")
    dec = MolmoActDecoder(ck)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    obs = Observation([image], "pick up the red cube")

    inputs = ck.processor([image], reasoning_prompt(obs.instruction, 1))
    prefill_ms = median_ms(lambda: (dec.prefill(dec.cache, inputs), sync()), repeats)

    action_ids = dec.grammar.action_ids

    def decode_loop():  # one step = forward one token + logits over the 256 action ids + argmax
        dec.cache.length = inputs.length
        token = ck.tokenizer.ids.eos
        for _ in range(decode_tokens):
            token = dec.pick(dec.decode(dec.cache, [token]), action_ids, None, None)
        sync()
    dec.prefill(dec.cache, inputs)
    decode_ms = median_ms(decode_loop, repeats) / decode_tokens

    first = dec.reason(obs)
    reason_ms = median_ms(lambda: dec.reason(obs), repeats)
    edited = [(min(255, x + 40), y) for x, y in first.trace]
    visual_ms = median_ms(lambda: dec.steer_visual(obs, edited), repeats)
    dec.reason(obs)
    text_ms = median_ms(lambda: dec.steer_text(edited), repeats)

    weight_bytes = sum(p.numel() * p.element_size() for p in ck.model.parameters())
    step_bytes = decode_step_bytes(ck, len(action_ids))
    bw = copy_bandwidth_gbs(dev)
    floor_ms = step_bytes / (bw * 1e9) * 1e3
    out = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "shape": shape if not model_path else str(model_path),
        "dtype": str(ck.model.dtype).replace("torch.", ""),
        "prompt_tokens": inputs.length,
        "answer_tokens": len(first.token_ids),
        "decode_steps_reason": first.decode_steps,
        "prefill_ms": round(prefill_ms, 2),
        "decode_ms_per_token": round(decode_ms, 3),
        "reason_ms": round(reason_ms, 2),
        "steer_visual_ms": round(visual_ms, 2),
        "steer_text_ms": round(text_ms, 2),
        "reason_over_steer_text": round(reason_ms / text_ms, 1),
        "reason_over_steer_visual": round(reason_ms / visual_ms, 2),
        "weights_gb": round(weight_bytes / 1e9, 3),
        "decode_step_weights_mb": round(step_bytes / 1e6, 2),
        "copy_bandwidth_gbs": round(bw, 1),
        "bandwidth_floor_ms_per_token": round(floor_ms, 3),
        "decode_over_floor": round(decode_ms / floor_ms, 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shape", default="tiny", choices=["tiny", "7b", "7b-mini"])
    p.add_argument("--model.path", dest="model_path", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = run(args.device, args.shape, args.model_path, args.repeats, args.decode_tokens)
    if args.json:
        print(json.dumps(res))
    else:
        width = max(len(k) for k in res)
        for k, v in res.items():
            print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

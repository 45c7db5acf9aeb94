"""Train the bundled small MolmoAct on the simulated cell, from scratch, deterministically.

``python -m app.sim.train --out assets/sim-molmoact [--seed 0]`` regenerates the expert data
(``app.sim.datagen``), trains the depth VQ-VAE (``app.sim.depth_vq``), builds our own small tokenizer
with the reference's conventions, trains our MolmoAct architecture (same ``MolmoActConfig``, module
tree, grammar and prompts as the 7B runtime; only smaller) with teacher forcing, and writes a
checkpoint directory that ``model.checkpoint.load_checkpoint`` reads like an official one.

Samples per recorded step (the reference trains half its data trajectory-conditioned):
* ``reason``: reasoning prompt; answer = depth codes, the expert's trace, the expert's action;
* ``reason_alt``: same prompt, the answer's trace is *another* object's expert trace and the action is
  that expert's: what ``steer_text`` forces; no loss on the forced trace (the instruction does not
  predict it), so the model learns the action that follows a trace;
* ``visual``: trajectory-conditioned prompt, the trace drawn on the image as ``steer_visual`` draws it,
  answer = the action that follows the drawn trace.

The command's defaults are the recipe of the bundled checkpoint's first run (the bundled checkpoint
is that run continued by two DAgger rounds, README): ``--wrist`` (every sample has two images,
front then wrist, with the reference's multi-image prompts; the trace, the look-up supervision and the
pointer stay on the first), ``--expert servo`` (``ServoPickExpert`` for the pick tasks),
``--whole-action-tokens`` and ``--whole-number-tokens`` (each trace coordinate one token), and ``RECIPE``
below: missed grasps in the picking and the steer episodes, the offset head (``OffsetHead``), data episodes
that end once an object is lost (``--end-lost``), a wrist camera with a RealSense D405's 58° field of view
(``--wrist-fovy 58``), 6,000 steps in fp32. ``--ordinal-sigma 1.5`` adds soft targets over the action bins and
coordinates (``app.sim.ordinal``; tried, not bundled). ``--no-end-lost --wrist-fovy d435 --precision auto`` is
the recipe of the checkpoint bundled before (the D435's 42.6°); with ``--miss-prob 0 --steer-miss-prob 0
--offset-weight 0 --steps 5000 --precision fp32`` as well, the one before it; adding ``--no-whole-number-tokens``
gives the one before that, and ``--no-wrist --expert script --no-whole-action-tokens`` the earlier one.

``--init-from DIR`` continues a checkpoint this pipeline wrote (for example a GPU run, continued on the
CPU or on other data) instead of starting from scratch: its weights, tokenizer and action normalization
are kept, and so are its depth codes, through an encoder fitted to its saved (frozen) codebook and
decoder. The run's ``config.json`` records what it continued.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.sim import scene
from app.sim.datagen import LOCATED, DataConfig, StepRecord, generate
from app.sim.depth_vq import VQTrainConfig, encode_all, fit_encoder, train_depth_vqvae
from app.sim.ordinal import OrdinalTargets, smooth_rows_
from app.sim.tasks import EXPERTS, TASKS
from model.actions import ActionStats, ActionTokenizer, encode_actions
from model.checkpoint import DEPTH_FILES, LoadedCheckpoint, init_random_, load_checkpoint, preprocessor_config_dict, \
    save_weights
from model.config import AdapterConfig, LlmConfig, MolmoActConfig, VitConfig
from model.depth import save_depth_decoder
from model.grammar import GrammarTokens
from model.molmoact import MolmoAct
from model.processor import MolmoActProcessor, PROMPTS, chat_text, reasoning_prompt, steering_prompt
from model.tokenizer import NUMBER_TOKENS, MolmoActTokenizer, build_tiny_tokenizer, save_tokenizer

UNNORM_KEY = "sim"                 # the action adapter's preset for the simulated cell
IMAGE_SIDE = 168                   # 12x12 patches of 14 px
IMAGE_POOLING = 2                  # 2x2 pooling of the 12x12 patches: 6x6 = 36 LLM image tokens per image
TOKEN_GRID = IMAGE_SIDE // (14 * IMAGE_POOLING)   # image tokens per side
VIT_RMS_MAX = 4.0
SCALE_PENALTY = 0.1
PROBE_WEIGHT = 0.5                 # the training-only location probe's loss (see LocationProbe)
POINTER_WEIGHT = 3.0               # the training-only pointer head's loss (see PointerHead)
LOOK_WEIGHT = 0.3                  # attention supervision of one LLM head (see look_loss)
LOOK_HEAD = 0                      # ... that head, in the middle block (see look_attention)
WRIST_LOOK_HEAD = 1                # the wrist look-up's head, same block (see Example.wrist_look_at)
OFFSET_SCALE_M = 0.05              # the offset head regresses (object - TCP) in units of this (see OffsetHead)
OFFSET_CLIP = 4.0                  # ... clipped to this many units (20 cm): far away only the direction matters
TOKENS_PER_IMAGE = TOKEN_GRID ** 2


def cameras_of(data: DataConfig) -> tuple[str, ...]:
    """The checkpoint's images, in prompt order (the first is the one the trace lives in)."""
    return ("front", "wrist") if data.wrist else ("front",)


@dataclass
class ModelShape:
    llm_width: int = 128
    llm_layers: int = 3
    llm_heads: int = 4
    vit_width: int = 96
    vit_layers: int = 4
    trained_vocab: int = 640       # BPE ids learned from our prompts and answers
    bpe_vocab: int = 896           # + 256 action ids (the last ids before EOS, as in Qwen)
    embedding_size: int = 1088


def shape_with_numbers(shape: ModelShape) -> ModelShape:
    """Room for the whole-number fillers (10..255) between the learned BPE ids and the action ids."""
    bpe = shape.trained_vocab + 256 + (NUMBER_TOKENS - 10)
    extra = max(0, bpe - shape.bpe_vocab)
    return replace(shape, bpe_vocab=max(bpe, shape.bpe_vocab),
                   embedding_size=shape.embedding_size + -(-extra // 64) * 64)


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 5000
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 150
    weight_decay: float = 0.01
    # shares of reason, reason_alt, visual; a step without an alt label (40%) draws reason instead of reason_alt
    mix: tuple[float, float, float] = (0.45, 0.25, 0.3)
    # per answer token; 100 depth tokens at 0.2 still outweigh a ~20-token trace at 3.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"depth": 0.2, "trace": 3.0, "action": 2.0,
                                                                    "other": 0.2})
    probe_weight: float = PROBE_WEIGHT
    pointer_weight: float = POINTER_WEIGHT
    look_weight: float = LOOK_WEIGHT
    wrist_look_weight: float = 0.0   # > 0: the wrist look-up (see Example.wrist_look_at), with two images
    offset_weight: float = 0.0     # > 0: the offset head (see OffsetHead); needs data with 3-D positions
    vision_steps: int = 2000       # stage 1: vision tower + location probe only (see pretrain_vision)
    vision_lr: float = 2e-3
    clip: float = 0.5              # gradient-norm clip; at 1.0 the from-scratch ViT diverges at lr 2e-3
    data: DataConfig = field(default_factory=DataConfig)
    vq: VQTrainConfig = field(default_factory=VQTrainConfig)
    shape: ModelShape = field(default_factory=ModelShape)
    threads: int | None = None
    device: str = "cpu"            # "cuda" trains the VQ-VAE, vision tower and model on a GPU (data stays on the CPU)
    train_seconds: float | None = None   # instead of ``steps``: as many steps as fit (see calibrate_steps)
    init_from: Path | None = None  # continue a checkpoint of this pipeline (see ``continued_from``)
    data_seed: int | None = None   # the data's seed, when not ``seed``: a second training seed on the same data
    head_warmup: int = 200         # with ``init_from``: steps that fit the training-only heads alone first
    whole_action_tokens: bool = False   # each action value one token (see build_tiny_tokenizer)
    whole_number_tokens: bool = False   # each trace coordinate one token (see build_tiny_tokenizer)
    ordinal_sigma: float = 0.0     # > 0: soft Gaussian targets over ordered ids, in ids (see OrdinalTargets)
    precision: str = "fp32"        # "fp32" | "bf16" (autocast) | "auto": bf16 where native (see resolve_precision)
    log_every: int = 50


# ------------------------------------------------------------------------------ precision
PRECISIONS = ("auto", "fp32", "bf16")


def bf16_native(device: str) -> bool:
    """Whether ``device`` multiplies bf16 in hardware: a CUDA GPU that supports it, or a CPU with AVX-512 BF16
    or AMX. Elsewhere bf16 is emulated and slower than fp32."""
    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → ``bf16`` where the device multiplies it natively, else ``fp32``.

    Why bf16: on the 2-core CPU machine (AVX-512 BF16) a training step takes 0.43 s instead of 0.50 s, with the
    same losses to three decimals over 100 steps. The weights, the optimizer and the saved checkpoint stay fp32;
    autocast runs the matrix products (and attention) in bf16. A run is deterministic from its seed on one
    machine either way; ``config.json`` records which precision it used."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


def autocast(precision: str, device: str):
    """The context a forward pass runs in: bf16 autocast, or nothing (fp32)."""
    import contextlib
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)


# ------------------------------------------------------------------------------ model pieces
def model_config(shape: ModelShape, norm_stats: dict, image_patch_id: int) -> MolmoActConfig:
    heads = 4
    vit = VitConfig(hidden_size=shape.vit_width, intermediate_size=2 * shape.vit_width,
                    num_hidden_layers=shape.vit_layers, num_attention_heads=heads, num_key_value_heads=heads,
                    head_dim=shape.vit_width // heads, image_default_input_size=(IMAGE_SIDE, IMAGE_SIDE),
                    image_num_pos=(IMAGE_SIDE // 14) ** 2)
    adapter = AdapterConfig(vit_layers=(-1, -3), hidden_size=shape.vit_width, num_attention_heads=heads,
                            num_key_value_heads=heads, head_dim=shape.vit_width // heads,
                            intermediate_size=2 * shape.llm_width, text_hidden_size=shape.llm_width)
    llm = LlmConfig(hidden_size=shape.llm_width, num_attention_heads=shape.llm_heads,
                    num_key_value_heads=shape.llm_heads, head_dim=shape.llm_width // shape.llm_heads,
                    vocab_size=shape.embedding_size, additional_vocab_size=128, qkv_bias=True,
                    num_hidden_layers=shape.llm_layers, intermediate_size=3 * shape.llm_width,
                    max_position_embeddings=1024, rope_theta=10_000.0)
    return MolmoActConfig(vit_config=vit, adapter_config=adapter, llm_config=llm, image_patch_id=image_patch_id,
                          norm_stats=norm_stats)


def preprocessor_config() -> dict:
    """One stretched view of the image (no high-res tiling): the small model's whole visual input."""
    return {**preprocessor_config_dict(), "crop_mode": "resize", "max_crops": 1, "max_multi_image_crops": 1,
            "base_image_input_size": [IMAGE_SIDE, IMAGE_SIDE],
            "image_pooling_w": IMAGE_POOLING, "image_pooling_h": IMAGE_POOLING}


def tokenizer_corpus(seed: int) -> list[str]:
    """Our prompts with every task's instruction, and answers as the model writes them."""
    from model.tokenizer import action_string     # how the action ids are spelled in answers
    rng = random.Random(seed)
    lines = [chat_text(template.format(instruction=t.instruction))
             for t in TASKS.values() for template in PROMPTS.values()]
    for _ in range(200):
        pts = ",".join(f"[{rng.randint(0, 255)},{rng.randint(0, 255)}]" for _ in range(rng.randint(1, 5)))
        acts = ", ".join(action_string(rng.randint(0, 255)) for _ in range(7))
        lines.append(f" The depth map of the image is . The trajectory of the end effector is [{pts}]. Based on "
                     f"this information, the action that the robot should take is [{acts}].")
        lines.append(" Based on the image and the annotated trajectory of the end effector, the action that the "
                     f"robot should take is [{acts}].")
    return lines


def norm_stats_from(records: list[StepRecord]) -> dict:
    acts = [r.own_action for r in records] + [r.alt_action for r in records if r.alt_action is not None]
    a = np.stack(acts)
    q01, q99 = np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0)
    for i in range(6):                     # a degenerate span would turn every value into 0
        if q99[i] - q01[i] < 1e-4:
            q01[i], q99[i] = q01[i] - 1e-3, q99[i] + 1e-3
    q01[6], q99[6] = 0.0, 1.0
    return {UNNORM_KEY: {"action": {"q01": q01.tolist(), "q99": q99.tolist(),
                                    "mask": [True] * 6 + [False]}}}


# ------------------------------------------------------------------------------ samples
@dataclass
class Example:
    ids: list[int]
    weights: list[float]           # loss weight of predicting ids[i] (index aligned with ids)
    image: np.ndarray              # uint8 [S, S, 3]
    located: np.ndarray | None = None   # [len(LOCATED) + 1, 2] model space: the objects, the bowl, the TCP
    pointer_at: int | None = None       # index into ids of the last hidden state the pointer head reads
    pointer_from: int | None = None     # ... and of the first (the prompt's last token)
    pointer_target: np.ndarray | None = None   # [2, 2] model space: where the answer goes, and the TCP
    extra_images: tuple[np.ndarray, ...] = ()   # the other cameras' images, in prompt order (the wrist)
    wrist_located: np.ndarray | None = None     # [len(LOCATED), 2] in the wrist image, NaN: not in view
    wrist_look_at: int | None = None    # the wrist image token that holds the named object (see wrist_look_position)
    action_span: tuple[int, int] | None = None  # the positions whose next token is an action value (first, last)
    offset_target: np.ndarray | None = None     # [3] metres: the acted-on object's centre minus the TCP

    @property
    def images(self) -> np.ndarray:
        """[n_images, S, S, 3]: the trace image first."""
        return np.stack([self.image, *self.extra_images])

    def look_position(self, image_patch_id: int) -> int:
        """Where in ``ids`` the ``look_at`` image token sits."""
        return int(np.flatnonzero(np.asarray(self.ids) == image_patch_id)[self.look_at])

    def wrist_look_position(self, image_patch_id: int) -> int:
        """Where in ``ids`` the ``wrist_look_at`` token sits: the second image's tokens follow the first's.

        Why a wrist look-up: the last centimetres of a grasp are what the front camera cannot show (a 6x6 token
        grid over the whole cell, the hand in front of the object), and the wrist view shows them large. From
        the positions that write the action, one head should read the wrist token that holds the named object."""
        return int(np.flatnonzero(np.asarray(self.ids) == image_patch_id)[TOKENS_PER_IMAGE + self.wrist_look_at])

    @property
    def look_at(self) -> int | None:
        """The image token (row-major over the pooled grid) whose cell holds where the answer goes."""
        return None if self.pointer_target is None else token_at(self.pointer_target[0])


class SampleBuilder:
    def __init__(self, tokenizer: MolmoActTokenizer, processor: MolmoActProcessor, stats: ActionStats,
                 weights: dict[str, float], n_images: int = 1) -> None:
        self.gt = GrammarTokens(tokenizer)
        self.processor = processor
        self.action_tok = ActionTokenizer(base_id=tokenizer.action_base_id)
        self.stats = stats
        self.w = weights
        self._prompts: dict[tuple[str, str], list[int]] = {}
        self.blank = np.zeros((IMAGE_SIDE, IMAGE_SIDE, 3), np.uint8)   # any image: the token layout is the same
        self.n_images = n_images

    def prompt_ids(self, instruction: str, kind: str) -> list[int]:
        key = (instruction, kind)
        if key not in self._prompts:
            n = self.n_images
            prompt = steering_prompt(instruction, n) if kind == "visual" else reasoning_prompt(instruction, n)
            self._prompts[key] = self.processor([self.blank] * n, prompt).input_ids[0].tolist()
        return self._prompts[key]

    def action_ids(self, action: np.ndarray) -> list[int]:
        return list(self.gt.action_ids_text(encode_actions(action, self.action_tok, self.stats)))

    def build(self, rec: StepRecord, codes: np.ndarray, kind: str) -> Example:
        gt, w = self.gt, self.w
        located = None if rec.objects_model is None else located_of(rec)
        extra = (rec.wrist,) if self.n_images == 2 else ()
        wrist_located = rec.wrist_objects if self.n_images == 2 else None
        prompt = self.prompt_ids(rec.instruction, kind)
        ids = list(prompt)
        weights = [0.0] * len(prompt)

        def add(piece, weight):
            ids.extend(piece)
            weights.extend([weight] * len(piece))

        if kind == "visual":
            action, drawn = (rec.alt_action, rec.alt_trace) if rec.drawn_kind == "alt" else (rec.own_action,
                                                                                             rec.own_trace)
            add(gt.steer_action_prefix, w["other"])
            pointer_at = len(ids) - 1                # before the action: where the drawn line ends
            first_action = len(ids)
            add(self.action_ids(action), w["action"])
            acted = rec.alt_target if rec.drawn_kind == "alt" else rec.own_target
            return Example(ids, weights, rec.drawn, located, pointer_at=pointer_at, pointer_from=len(prompt) - 1,
                           pointer_target=_pointer_target(np.asarray(drawn)[-1], rec), extra_images=extra,
                           wrist_located=wrist_located, action_span=(first_action - 1, len(ids) - 2),
                           offset_target=offset_of(rec, acted))
        alt = kind == "reason_alt"
        trace, action = (rec.alt_trace, rec.alt_action) if alt else (rec.own_trace, rec.own_action)
        # a steer episode's own trace is not the instruction's either: no trace loss there
        trace_w = 0.0 if (alt or rec.steer_episode) else w["trace"]
        add(gt.depth_prefix, w["other"])
        add([gt.depth_ids[int(c)] for c in codes], w["depth"])
        add(gt.trace_prefix, w["other"])
        pointer_at = len(ids) - 1                    # before the trace: where the named object is
        add(gt.trace_ids([tuple(map(int, p)) for p in trace]), trace_w)
        add(gt.action_prefix, w["other"])
        first_action = len(ids)
        add(self.action_ids(action), w["action"])
        named = None if rec.objects_model is None else rec.objects_model[LOCATED.index(TASKS[rec.task].target)]
        # the wrist look-up where the action goes to the named object: not a forced other trace, not a steer episode
        wrist_look = None if (alt or rec.steer_episode) else wrist_token(wrist_located, TASKS[rec.task].target)
        return Example(ids, weights, rec.image, located, pointer_at=pointer_at, pointer_from=len(prompt) - 1,
                       pointer_target=_pointer_target(named, rec), extra_images=extra, wrist_located=wrist_located,
                       wrist_look_at=wrist_look, action_span=(first_action - 1, len(ids) - 2),
                       offset_target=offset_of(rec, rec.alt_target if alt else rec.own_target))


def token_at(xy: np.ndarray) -> int:
    """The image token (row-major over the pooled grid) whose cell holds ``xy`` (model space, 0..255)."""
    col, row = np.clip((np.asarray(xy, float) / (256.0 / TOKEN_GRID)).astype(int), 0, TOKEN_GRID - 1)
    return int(row * TOKEN_GRID + col)


def wrist_token(wrist_located: np.ndarray | None, name: str) -> int | None:
    """The wrist image token whose cell holds ``name``; None when out of view."""
    if wrist_located is None or name not in LOCATED:
        return None
    xy = np.asarray(wrist_located[LOCATED.index(name)], float)
    return token_at(xy) if np.all(np.isfinite(xy)) else None


def ordinal_groups(gt: GrammarTokens) -> list[tuple[int, ...]]:
    """The ordered id groups: the action bins, and the trace coordinates when each is one token."""
    groups = [tuple(gt.action_ids)]
    if gt.number_ids is not None:
        groups.append(tuple(gt.number_ids))
    return groups


def offset_of(rec: StepRecord, name: str | None) -> np.ndarray | None:
    """Where the object an action goes for is, from the TCP (metres, base frame); None without 3-D data."""
    if name is None or rec.objects_m is None or rec.tcp_m is None:
        return None
    return (np.asarray(rec.objects_m[LOCATED.index(name)]) - np.asarray(rec.tcp_m)).astype(np.float32)


def _pointer_target(goal: np.ndarray | None, rec: StepRecord) -> np.ndarray | None:
    return None if goal is None else np.stack([np.asarray(goal, np.float32),
                                               np.asarray(rec.ee_model, np.float32)])


def located_of(rec: StepRecord) -> np.ndarray:
    """What the location probe targets: the objects, the bowl, then the TCP, [len(LOCATED) + 1, 2] model space."""
    return np.concatenate([rec.objects_model, np.asarray(rec.ee_model)[None]]).astype(np.float32)


def cosine_lr(step: int, steps: int, peak: float, warmup: int, floor: float) -> float:
    """Linear warm-up to ``peak``, then a cosine down to ``floor * peak``."""
    return peak * min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / steps)))


class LocationProbe(nn.Module):
    """Training-only auxiliary head, not part of the checkpoint: from each image token's feature (what
    the LLM receives) say which of the objects, the bowl and the TCP lie in that token's cell, where in
    the cell, and where the cell itself is (DETR-style local targets).

    Trained from scratch on a few thousand scenes, the model first learns the answer's average and
    ignores the image: the trace tokens' gradient reaches the vision tower only through attention that
    has not yet learned where to look. Local targets are what a patch can see, so the vision tower
    learns them quickly, and the LLM can then read "red cube here, this far into the cell, this cell"
    from one token.
    """

    def __init__(self, width: int, things: int, grid: int) -> None:
        super().__init__()
        self.things, self.grid = things, grid
        self.head = nn.Linear(width, 3 * things + 2)
        cell = 256.0 / grid
        rows, cols = np.divmod(np.arange(grid * grid), grid)
        self.register_buffer("centres", torch.tensor(np.stack([(cols + 0.5) * cell, (rows + 0.5) * cell], 1),
                                                     dtype=torch.float32), persistent=False)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feats [B * grid², width] → presence logits [B, T, K], offsets [B, T, K, 2], cell centre [B, T, 2]."""
        k, t = self.things, self.grid * self.grid
        out = self.head(feats.float()).view(-1, t, 3 * k + 2)
        return out[..., :k], out[..., k:3 * k].reshape(-1, t, k, 2), out[..., 3 * k:]

    def loss(self, feats: torch.Tensor, located: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """located [B, K, 2] model space (0..255; NaN: not in this image) → (loss, mean read-out error in
        model units per thing, over the images it is in)."""
        cell = 256.0 / self.grid
        presence, offsets, centre = self(feats)
        seen = torch.isfinite(located).all(-1)                                                  # [B, K]
        located = torch.where(seen[..., None], located, torch.zeros_like(located))
        col_row = (located / cell).floor().clamp(0, self.grid - 1)
        token = (col_row[..., 1] * self.grid + col_row[..., 0]).long()                         # [B, K]
        present = (token[:, None, :] == torch.arange(self.grid ** 2, device=feats.device)[None, :, None]).float()
        present = present * seen[:, None, :].float()
        true_off = (located[:, None] - self.centres[None, :, None]) / cell                      # [B, T, K, 2]
        loss_presence = F.binary_cross_entropy_with_logits(
            presence, present, pos_weight=torch.tensor(float(self.grid), device=feats.device))
        loss_offset = ((offsets - true_off).pow(2).sum(-1) * present).sum() / present.sum().clamp(min=1.0)
        loss_centre = F.mse_loss(centre, ((self.centres - 128.0) / 64.0).expand_as(centre))
        with torch.no_grad():                       # what one token tells: the most present cell + its offset
            best = presence.argmax(1)                                                       # [B, K]
            b_idx = torch.arange(best.shape[0], device=best.device)[:, None]
            k_idx = torch.arange(self.things, device=best.device)[None]
            guess = self.centres[best] + offsets[b_idx, best, k_idx] * cell
            error = ((guess - located).norm(dim=-1) * seen).sum(0) / seen.sum(0).clamp(min=1)
        return loss_presence + loss_offset + loss_centre, error


class PointerHead(nn.Module):
    """Training-only auxiliary head, not part of the checkpoint: from the LLM's hidden states of the
    answer up to its trace (or, in a trajectory-conditioned sample, up to its action) regress where the
    answer is going (the named object; the drawn line's end) and where the TCP is.

    The trace's digit tokens teach the same thing, but a wrong digit costs the same whatever the
    distance, so the LLM learns the trace's average long before it learns to look up the named object
    in the image. A regression gives a graded signal straight to the attention that has to do the
    look-up, and asking it at every answer position before the trace (the depth tokens' ~100) rather
    than at one gives that attention a hundred times the examples per sample.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.head = nn.Linear(width, 4)

    def loss(self, hidden: torch.Tensor, spans: torch.Tensor, target: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [G, S, width] (a length group), spans [G, 2] (first, last position read, inclusive),
        target [G, 2, 2] model space → (per sample: the mean squared error over its positions [G], the
        last positions' error per point in model units [G, 2]). One batched head call: per-sample loops
        of small ops are what bound a GPU step."""
        goal = target / 128.0 - 1.0
        pos = torch.arange(hidden.shape[1], device=hidden.device)[None]
        read = (pos >= spans[:, :1]) & (pos <= spans[:, 1:])                                  # [G, S]
        pred = self.head(hidden.float()).view(*hidden.shape[:2], 2, 2)
        sq = (pred - goal[:, None]).pow(2).mean((-1, -2))                                   # [G, S]
        per_sample = (sq * read).sum(1) / read.sum(1)
        with torch.no_grad():
            last = pred[torch.arange(len(pred), device=pred.device), spans[:, 1]]
            error = (last - goal).norm(dim=-1) * 128.0
        return per_sample, error


class OffsetHead(nn.Module):
    """Training-only auxiliary head, not part of the checkpoint: from the LLM's hidden states at the
    positions that write the action, regress where the object the action goes for is, in 3-D, from the
    TCP (the named object; in a steer sample the trace's object).

    Why: rollouts (2026-12-05, fourth session) of both the bundled model and the run with missed grasps
    sent the final descent, (0.2, 0, -2.5) cm, with the TCP 3-5 cm beside the object, and under
    ``steer_text`` kept pressing down there while the trace said rise and come over. The front view
    cannot tell "3 cm nearer the camera" from "higher" (both move a point down the image; so does the
    trace's 2-D line), and a classifier of action bins that cannot tell picks the most frequent
    value near objects, a straight descent. The answer to "how far, which way" has to come from the
    images (the wrist view shows the object beside the fingers); this asks for it at the positions
    where the action is written, with a graded error, in every sample kind.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.head = nn.Linear(width, 3)

    def loss(self, hidden: torch.Tensor, spans: torch.Tensor, target: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [G, S, width], spans [G, 2] (first, last action-writing position), target [G, 3] metres →
        (per sample: mean squared error over its positions in OFFSET_SCALE_M units [G], the first position's
        error in cm [G])."""
        goal = (target / OFFSET_SCALE_M).clamp(-OFFSET_CLIP, OFFSET_CLIP)
        pos = torch.arange(hidden.shape[1], device=hidden.device)[None]
        read = (pos >= spans[:, :1]) & (pos <= spans[:, 1:])                                  # [G, S]
        pred = self.head(hidden.float())                                                      # [G, S, 3]
        sq = (pred - goal[:, None]).pow(2).mean(-1)
        per_sample = (sq * read).sum(1) / read.sum(1)
        with torch.no_grad():
            first = pred[torch.arange(len(pred), device=pred.device), spans[:, 0]]
            error = (first - goal).norm(dim=-1) * OFFSET_SCALE_M * 100.0
        return per_sample, error


def _seeded_init_(head: nn.Linear, seed: int) -> None:
    """A training-only head's weights from its own generator (the model's init stream stays untouched)."""
    head.weight.data.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    head.bias.data.zero_()


def look_attention(model: MolmoAct) -> nn.Module:
    """The middle block's attention: after a block that can gather the instruction, before one that can
    turn what it reads into digits."""
    blocks = model.model.transformer.blocks
    return blocks[len(blocks) // 2].self_attn


def look_loss(model: MolmoAct, attn_in: tuple[torch.Tensor, torch.Tensor, torch.Tensor], ids: torch.Tensor,
              rows: list[tuple[int, Example]], wrist: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention supervision: head ``LOOK_HEAD`` of ``look_attention``, from every answer position the
    pointer reads, should attend to the image token whose cell holds the named object (the drawn line's end).

    The pointer's regression says *what* to read but reaches the look-up only through attention weights
    that start uniform over ~300 tokens; naming the token to look at trains the instruction-to-image match
    (query: "red cube"; key: a token where the probe says red cube) directly. ``attn_in`` is that
    attention's input (x, cos, sin) for the group's batch ``ids``; returns per row of ``rows`` (mean -log p
    of the token over the positions read, whether the last position attends most to it). Batched over the
    rows: one [R, S, S] score tensor, not a loop of small ops per sample.

    With ``wrist``: head ``WRIST_LOOK_HEAD``, from the positions that write the action, to the wrist token
    that holds the named object (``Example.wrist_look_position``)."""
    attn = look_attention(model)
    q, k, _ = attn.qkv(*attn_in)
    head = WRIST_LOOK_HEAD if wrist else LOOK_HEAD
    kv_head = head // (attn.n_heads // attn.n_kv)
    index = torch.tensor([row for row, _ in rows], device=q.device)
    q, k = q[index, head], k[index, kv_head]                                 # [R, S, d]
    s = q.shape[1]
    pid = model.cfg.image_patch_id
    if wrist:
        target = torch.tensor([e.wrist_look_position(pid) for _, e in rows], device=q.device)
        spans = [e.action_span for _, e in rows]
    else:
        target = torch.tensor([e.look_position(pid) for _, e in rows], device=q.device)    # [R]
        spans = [(e.pointer_from, e.pointer_at) for _, e in rows]
    first = torch.tensor([a for a, _ in spans], device=q.device)[:, None]
    last = torch.tensor([b for _, b in spans], device=q.device)[:, None]
    pos = torch.arange(s, device=q.device)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])                              # [R, S(q), S(k)]
    causal = pos[None, :] <= pos[:, None]
    logp = scores.float().masked_fill(~causal, float("-inf")).log_softmax(-1)
    picked = logp.gather(2, target[:, None, None].expand(-1, s, 1))[..., 0]                 # [R, S]
    read = (pos[None] >= first) & (pos[None] <= last)
    per_row = -(picked.masked_fill(~read, 0.0)).sum(1) / read.sum(1)
    at_last = scores[torch.arange(len(rows), device=q.device), last[:, 0]].masked_fill(pos[None] > last, float("-inf"))
    hits = (at_last.argmax(-1) == target).float()
    return per_row, hits


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Split a batch (indices sorted by length) in two where that pads the fewest tokens: the
    trajectory-conditioned samples are a third of the reasoning ones' length."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(order)
    cost = [k * sizes[k - 1] + (n - k) * sizes[-1] if k else n * sizes[-1] for k in range(n)]
    k = int(np.argmin(cost))
    return [g for g in (order[:k], order[k:]) if g]


def crops_of(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [B, S, S, 3] → the processor's crops [B, P, 588] on ``device`` (normalize, then patchify, as
    ``siglip_normalize`` and ``patchify`` do; done there, so a GPU step does not wait on the CPU for it)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float() / 255.0
    x = x * 2.0 - 1.0
    b, h, w, c = x.shape
    p = 14
    x = x[:, :h // p * p, :w // p * p].reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c).contiguous()


def image_features(model: MolmoAct, images: np.ndarray, pooled_one: torch.Tensor, patches: int,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 [B, n, S, S, 3] (n images per example; [B, S, S, 3] is n = 1) → the image tokens' features
    [B * n * tokens, llm_width] (batch order, each example's images in order), the scale guard's
    penalty, and the features' RMS. ``pooled_one`` is the processor's index for one example's n images,
    ``patches`` the patches of one image."""
    if images.ndim == 4:
        images = images[:, None]
    b, n = images.shape[:2]
    crops = crops_of(images.reshape(b * n, *images.shape[2:]), device)
    pooled = torch.cat([pooled_one + i * n * patches for i in range(b)], 0).to(device)
    vb = model.model.vision_backbone
    vit = vb.encode(crops)                                   # the pieces of vb.forward, to see their scale
    pooled_feats, valid = vb.pool(vit, pooled)
    feats = vb.image_projector(pooled_feats)[valid]
    # Scale guard: SigLIP has no final norm and the projector is a SwiGLU (quadratic), so from scratch the
    # image features can grow by orders of magnitude; the LLM then RMS-normalizes them into one constant
    # direction and stops seeing the image. Keep the ViT stream's RMS under VIT_RMS_MAX and the projected
    # features' RMS near 1 (the size the reference's trained projector emits relative to its embeddings).
    vit_rms = vit.float().pow(2).mean(-1).sqrt()
    feat_rms = feats.float().pow(2).mean(-1).sqrt()
    scale_penalty = (F.relu(torch.log(vit_rms / VIT_RMS_MAX)).pow(2).mean()
                     + torch.log(feat_rms.clamp(min=1e-6)).pow(2).mean())
    return feats, scale_penalty, feat_rms


def probe_losses(probe: LocationProbe, wrist_probe: LocationProbe | None, by_image: torch.Tensor,
                 located: np.ndarray, wrist_located: np.ndarray | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The location probe on the first image's tokens, plus the wrist probe on the second's when given;
    ``by_image`` [B, n, tokens, width] → (loss, the front probe's read-out error per thing)."""
    width = by_image.shape[-1]
    loss, error = probe.loss(by_image[:, 0].reshape(-1, width), torch.from_numpy(located.astype(np.float32)).to(device))
    if wrist_probe is not None and wrist_located is not None:
        loss = loss + wrist_probe.loss(by_image[:, 1].reshape(-1, width),
                                       torch.from_numpy(wrist_located.astype(np.float32)).to(device))[0]
    return loss, error


def pretrain_vision(model: MolmoAct, probe: LocationProbe, records: list[StepRecord], cfg: "TrainConfig",
                    pooled_one: torch.Tensor, patches: int, log=print,
                    wrist_probe: LocationProbe | None = None) -> list[dict]:
    """Stage 1: the vision tower and the probe alone (no LLM: about a fifth of a full step's cost), so
    that the image tokens say where things are before the LLM starts learning to read them. With
    ``wrist_probe`` the wrist images are read too (their own probe: what is where in that view)."""
    rng = np.random.default_rng(cfg.seed + 2)
    vb = model.model.vision_backbone
    params = list(vb.parameters()) + list(probe.parameters())
    if wrist_probe is not None:
        params += list(wrist_probe.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=0.0)
    history = []
    t0 = time.perf_counter()
    for step in range(cfg.vision_steps):
        lr = cosine_lr(step, cfg.vision_steps, cfg.vision_lr, warmup=100, floor=0.2)
        for g in opt.param_groups:
            g["lr"] = lr
        picks = rng.choice(len(records), cfg.batch, replace=len(records) < cfg.batch)
        images = np.stack([records[i].drawn if rng.random() < 0.3 else records[i].image for i in picks])
        located = np.stack([located_of(records[i]) for i in picks])
        if wrist_probe is not None:
            images = np.stack([images, np.stack([records[i].wrist for i in picks])], 1)
        wrist_located = np.stack([records[i].wrist_objects for i in picks]) if wrist_probe is not None else None
        with autocast(cfg.precision, cfg.device):
            feats, scale_penalty, _ = image_features(model, images, pooled_one, patches, cfg.device)
            probe_loss, error = probe_losses(probe, wrist_probe,
                                             feats.view(len(picks), -1, TOKENS_PER_IMAGE, feats.shape[-1]),
                                             located, wrist_located, cfg.device)
        loss = probe_loss + SCALE_PENALTY * scale_penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        if (step + 1) % (2 * cfg.log_every) == 0 or step + 1 == cfg.vision_steps:
            history.append({"step": step + 1, "probe_loss": round(probe_loss.item(), 4),
                            "probe_error": [round(float(e), 1) for e in error]})
            log(f"vision step {step + 1}/{cfg.vision_steps} probe loss {probe_loss.item():.3f} read-out error "
                f"{[round(float(e), 1) for e in error]} (model units; {LOCATED + ('tcp',)}) "
                f"{(time.perf_counter() - t0) / (step + 1):.2f} s/step")
    return history


def batch_loss(model: MolmoAct, examples: list[Example], pooled_one: torch.Tensor, patches: int,
               pad_id: int, device: torch.device | str = "cpu", probe: LocationProbe | None = None,
               probe_weight: float = PROBE_WEIGHT, pointer: PointerHead | None = None,
               pointer_weight: float = POINTER_WEIGHT, look_weight: float = 0.0,
               wrist_probe: LocationProbe | None = None, ordinal: OrdinalTargets | None = None,
               wrist_look_weight: float = 0.0, offset: OffsetHead | None = None,
               offset_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Teacher-forced weighted cross-entropy of a batch (right-padded; causal so padding is inert).
    The LLM runs once per length group (see ``length_groups``); the vision tower once for all. With
    ``ordinal`` the trace coordinates and action values get soft targets (see ``app.sim.ordinal``)."""
    b = len(examples)
    feats, scale_penalty, feat_rms = image_features(model, np.stack([e.images for e in examples]), pooled_one,
                                                    patches, device)
    per_image = feats.view(b, -1, feats.shape[-1])
    by_image = feats.view(b, -1, TOKENS_PER_IMAGE, feats.shape[-1])      # [B, n, tokens, width]
    ce_sum = torch.zeros((), device=device)
    w_sum = torch.zeros((), device=device)
    hits, counted = 0, 0
    pointer_losses: list[torch.Tensor] = []
    pointer_errors: list[torch.Tensor] = []
    look_losses: list[torch.Tensor] = []
    look_hits: list[torch.Tensor] = []
    wrist_losses: list[torch.Tensor] = []
    wrist_hits: list[torch.Tensor] = []
    offset_losses: list[torch.Tensor] = []
    offset_errors: list[torch.Tensor] = []
    captured: list[tuple] = []
    hook = None
    if look_weight > 0 or wrist_look_weight > 0:
        hook = look_attention(model).register_forward_pre_hook(
            lambda _module, args: captured.append(args[:3]))
    try:
        for group in length_groups([len(e.ids) for e in examples]):
            s = max(len(examples[i].ids) for i in group)
            ids = torch.full((len(group), s), pad_id, dtype=torch.long)
            wts = torch.zeros(len(group), s)
            for row, i in enumerate(group):
                e = examples[i]
                ids[row, :len(e.ids)] = torch.tensor(e.ids)
                wts[row, :len(e.ids)] = torch.tensor(e.weights)
            ids, wts = ids.to(device), wts.to(device)
            group_feats = per_image[torch.tensor(group, device=per_image.device)].reshape(-1, feats.shape[-1])
            hidden = model(model.add_image_features(model.model.transformer.wte(ids), ids, group_feats))
            looked = [(row, examples[i]) for row, i in enumerate(group)
                      if look_weight > 0 and examples[i].look_at is not None]
            if captured and looked:
                per_row, hit = look_loss(model, captured[-1], ids, looked)
                look_losses.append(per_row)
                look_hits.append(hit)
            wrist_looked = [(row, examples[i]) for row, i in enumerate(group) if wrist_look_weight > 0
                            and examples[i].wrist_look_at is not None and examples[i].action_span is not None]
            if captured and wrist_looked:
                per_row, hit = look_loss(model, captured[-1], ids, wrist_looked, wrist=True)
                wrist_losses.append(per_row)
                wrist_hits.append(hit)
            captured.clear()
            logits = model.logits(hidden[:, :-1])
            target, w = ids[:, 1:].clamp(max=logits.shape[-1] - 1), wts[:, 1:]   # image specials: weight 0
            if ordinal is None:
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
            else:
                ce = ordinal.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            ce_sum = ce_sum + (ce.view(len(group), -1) * w).sum()
            w_sum = w_sum + w.sum()
            if pointer is not None:
                rows = [(row, examples[i]) for row, i in enumerate(group)
                        if examples[i].pointer_at is not None and examples[i].pointer_target is not None]
                if rows:
                    spans = torch.tensor([[e.pointer_at if e.pointer_from is None else e.pointer_from, e.pointer_at]
                                          for _, e in rows], device=device)
                    target_xy = torch.from_numpy(np.stack([e.pointer_target for _, e in rows])).to(device)
                    per_sample, err = pointer.loss(hidden[torch.tensor([r for r, _ in rows], device=device)],
                                                   spans, target_xy)
                    pointer_losses.append(per_sample)
                    pointer_errors.append(err)
            if offset is not None:
                rows = [(row, examples[i]) for row, i in enumerate(group)
                        if examples[i].offset_target is not None and examples[i].action_span is not None]
                if rows:
                    spans = torch.tensor([e.action_span for _, e in rows], device=device)
                    goal = torch.from_numpy(np.stack([e.offset_target for _, e in rows])).to(device)
                    per_sample, err = offset.loss(hidden[torch.tensor([r for r, _ in rows], device=device)],
                                                  spans, goal)
                    offset_losses.append(per_sample)
                    offset_errors.append(err)
            with torch.no_grad():
                pred = logits.argmax(-1)
                act = w >= 1.0                                   # trace and action tokens (not depth, not fixed text)
                hits += int((pred[act] == target[act]).sum())
                counted += int(act.sum())
    finally:
        if hook is not None:
            hook.remove()
    ce_loss = ce_sum / w_sum.clamp(min=1e-6)
    loss = ce_loss + SCALE_PENALTY * scale_penalty
    info: dict[str, float] = {}
    if look_losses:
        look = torch.cat(look_losses).mean()
        loss = loss + look_weight * look
        info["look_loss"] = round(float(look.detach()), 4)
        info["look_acc"] = round(float(torch.cat(look_hits).mean()), 3)
    if wrist_losses:
        wrist_look = torch.cat(wrist_losses).mean()
        loss = loss + wrist_look_weight * wrist_look
        info["wrist_look_loss"] = round(float(wrist_look.detach()), 4)
        info["wrist_look_acc"] = round(float(torch.cat(wrist_hits).mean()), 3)
    if probe is not None and all(e.located is not None for e in examples):
        wrist_located = (np.stack([e.wrist_located for e in examples])
                         if wrist_probe is not None and all(e.wrist_located is not None for e in examples) else None)
        probe_loss, error = probe_losses(probe, wrist_probe, by_image, np.stack([e.located for e in examples]),
                                         wrist_located, device)
        loss = loss + probe_weight * probe_loss
        info["probe_loss"] = round(float(probe_loss.detach()), 4)
        info["probe_error"] = round(float(error.mean()), 2)
    if pointer_losses:
        pointer_loss = torch.cat(pointer_losses).mean()
        error = torch.cat(pointer_errors).mean(0)
        loss = loss + pointer_weight * pointer_loss
        info["pointer_loss"] = round(float(pointer_loss.detach()), 4)
        info["pointer_error_goal"], info["pointer_error_tcp"] = (round(float(e), 2) for e in error)
    if offset_losses:
        offset_loss = torch.cat(offset_losses).mean()
        loss = loss + offset_weight * offset_loss
        info["offset_loss"] = round(float(offset_loss.detach()), 4)
        info["offset_error_cm"] = round(float(torch.cat(offset_errors).median()), 2)
    acc = hits / counted if counted else float("nan")
    return loss, {"ce": float(ce_loss.detach()), "trace_action_token_acc": acc,
                  "image_feature_rms": round(float(feat_rms.detach().mean()), 3), **info}


@torch.no_grad()
def image_reliance(model: MolmoAct, examples: list[Example], pooled_one: torch.Tensor, patches: int,
                   pad_id: int, device: torch.device | str = "cpu") -> dict[str, float]:
    """Teacher-forced CE with each example's own image against the same answers with the images rolled
    by one in the batch: a model that ignores its image scores the same on both (gain 0)."""
    own = batch_loss(model, examples, pooled_one, patches, pad_id, device)[1]["ce"]
    rolled = [Example(e.ids, e.weights, examples[i - 1].image, extra_images=examples[i - 1].extra_images)
              for i, e in enumerate(examples)]
    other = batch_loss(model, rolled, pooled_one, patches, pad_id, device)[1]["ce"]
    return {"val_ce": round(own, 4), "val_ce_wrong_image": round(other, 4), "image_gain": round(other - own, 6)}


# ------------------------------------------------------------------------------ the pipeline
def train(cfg: TrainConfig, out_dir: Path, log=print, data_cache: Path | None = None,
          records: list[StepRecord] | None = None) -> dict:
    """``records``: the data of ``data_config(cfg)``, already made (``app.sim.chain`` keeps it in memory);
    else it is generated, or read from ``data_cache``."""
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if str(cfg.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True     # fp32 weights, TF32 tensor-core products
        torch.backends.cudnn.allow_tf32 = True
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, cfg.device))
    log(f"precision: {cfg.precision} on {cfg.device}")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    base = continued_from(cfg, out_dir, log) if cfg.init_from is not None else None   # refused before the data
    if records is None:
        records = _cached_records(data_config(cfg), data_cache, log)
    t_data = time.perf_counter() - t0
    log(f"{len(records)} steps from {records[-1].episode + 1} episodes in {t_data:.0f} s")
    if cfg.offset_weight > 0 and records[0].objects_m is None:
        raise ValueError("--offset-weight needs data with 3-D positions (StepRecord.objects_m): the cached data "
                         "was made before they were recorded; regenerate it (another --data-cache)")

    inv = np.stack([r.inv_depth for r in records])
    rng = np.random.default_rng(cfg.seed)
    vq_sample, vq_cfg = inv[rng.permutation(len(inv))[:4000]], replace(cfg.vq, seed=cfg.seed)
    if base is None:
        vq = train_depth_vqvae(vq_sample, vq_cfg, log=log, device=cfg.device)
    else:       # the checkpoint's own codes: its frozen codebook and decoder, a new encoder
        vq = fit_encoder(base.depth_decoder, vq_sample, vq_cfg, log=log, device=cfg.device)
    codes = encode_all(vq, inv)
    t_vq = time.perf_counter() - t0 - t_data
    log(f"depth VQ-VAE trained in {t_vq:.0f} s; {len(np.unique(codes))} codes in use")

    shape = shape_with_numbers(cfg.shape) if cfg.whole_number_tokens else cfg.shape
    tok = build_tiny_tokenizer(bpe_vocab=shape.bpe_vocab, embedding_size=shape.embedding_size,
                               trained_vocab=shape.trained_vocab, corpus=tokenizer_corpus(tokenizer_seed(cfg, base)),
                               whole_action_tokens=cfg.whole_action_tokens,
                               whole_number_tokens=cfg.whole_number_tokens)
    save_tokenizer(tok, out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))
    tokenizer = MolmoActTokenizer.from_dir(out_dir)
    processor = MolmoActProcessor.from_dir(out_dir, tokenizer)
    # a continued checkpoint keeps its action normalization: its bins must keep their meaning
    norm_stats = norm_stats_from(records) if base is None else base.config.norm_stats
    mcfg = model_config(shape, norm_stats, tokenizer.ids.im_patch)
    stats = ActionStats.from_norm_stats(norm_stats, UNNORM_KEY)
    cameras = cameras_of(cfg.data)
    if base is not None:
        check_continuable(base, out_dir, mcfg, cameras)
    if "wrist" in cameras and records[0].wrist is None:
        raise ValueError("the cached data has no wrist images: regenerate it (or train with the front camera only)")
    builder = SampleBuilder(tokenizer, processor, stats, cfg.loss_weights, n_images=len(cameras))

    model = MolmoAct(mcfg)
    init_random_(model, cfg.seed, scale_residual=True)
    groups = ordinal_groups(builder.gt)
    if base is not None:
        model.load_state_dict(base.model.state_dict())
    elif cfg.ordinal_sigma > 0:
        for k, ids in enumerate(groups):
            smooth_rows_(model.model.transformer.wte.embedding.data, ids, cfg.seed + 10 + k)
            smooth_rows_(model.output_weight.data, ids, cfg.seed + 20 + k)
    model.to(cfg.device)
    ordinal = OrdinalTargets(groups, shape.embedding_size, cfg.ordinal_sigma, cfg.device) \
        if cfg.ordinal_sigma > 0 else None
    model.init_rope()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters")
    one = processor([builder.blank] * len(cameras), "x")
    pooled_one = one.pooled_patches_idx
    patches = one.crops.shape[1]

    probe = None
    if cfg.probe_weight > 0 and records[0].objects_model is not None:
        probe = LocationProbe(shape.llm_width, len(LOCATED) + 1, TOKEN_GRID).to(cfg.device)
        _seeded_init_(probe.head, cfg.seed)
    pointer = None
    if cfg.pointer_weight > 0 and records[0].objects_model is not None:
        pointer = PointerHead(shape.llm_width).to(cfg.device)
        _seeded_init_(pointer.head, cfg.seed + 3)
    wrist_probe = None
    if probe is not None and "wrist" in cameras and records[0].wrist_objects is not None:
        wrist_probe = LocationProbe(shape.llm_width, len(LOCATED), TOKEN_GRID).to(cfg.device)
        _seeded_init_(wrist_probe.head, cfg.seed + 4)
    offset = None
    if cfg.offset_weight > 0:
        offset = OffsetHead(shape.llm_width).to(cfg.device)
        _seeded_init_(offset.head, cfg.seed + 5)
    heads = {"probe": probe, "pointer": pointer, "wrist_probe": wrist_probe, "offset": offset}
    t_vision0 = time.perf_counter()
    vision_steps = cfg.vision_steps if probe is not None and base is None else 0
    vision_history = pretrain_vision(model, probe, records, cfg, pooled_one, patches, log, wrist_probe) \
        if vision_steps > 0 else []
    t_vision = time.perf_counter() - t_vision0
    kinds = ("reason", "reason_alt", "visual")

    def draw_batch(order: np.ndarray, pos: int, draw_rng: np.random.Generator) -> tuple[list[Example], np.ndarray, int]:
        batch = []
        while len(batch) < cfg.batch:
            if pos >= len(order):
                order, pos = draw_rng.permutation(len(records)), 0
            i = order[pos]
            pos += 1
            kind = kinds[int(draw_rng.choice(3, p=cfg.mix))]
            if kind == "reason_alt" and records[i].alt_trace is None:
                kind = "reason"
            batch.append(builder.build(records[i], codes[i], kind))
        return batch, order, pos

    def batch_stream(draw_rng: np.random.Generator, order: np.ndarray, n: int):
        """``n`` batches in draw order, the next one built in a thread while the current step runs (the
        stream is the same as building them inline: only that thread touches ``draw_rng``)."""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as pool:
            state = (order, 0)
            future = pool.submit(draw_batch, *state, draw_rng) if n > 0 else None
            for k in range(n):
                batch, *state = future.result()
                if k + 1 < n:
                    future = pool.submit(draw_batch, *state, draw_rng)
                yield batch

    def make_optimizer(named: list[tuple[str, nn.Parameter]]) -> torch.optim.Optimizer:
        decay = [p for n, p in named if p.ndim >= 2]
        no_decay = [p for n, p in named if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    def train_step(net: MolmoAct, aux: dict, opt, named, batch, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(cfg.precision, cfg.device):
            loss, info = batch_loss(net, batch, pooled_one, patches, tokenizer.ids.eos, cfg.device, aux["probe"],
                                    cfg.probe_weight, aux["pointer"], cfg.pointer_weight, cfg.look_weight,
                                    aux["wrist_probe"], ordinal, cfg.wrist_look_weight, aux.get("offset"),
                                    cfg.offset_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.clip)
        opt.step()
        return loss, info

    def named_of(net, aux: dict):
        return list(net.named_parameters()) + head_parameters(aux)

    if base is not None and cfg.head_warmup > 0:
        fit_heads(model, heads, batch_stream(np.random.default_rng(cfg.seed + 98), np.zeros(0, np.int64),
                                             cfg.head_warmup), make_optimizer, train_step, cfg.lr, log)
    steps = cfg.steps
    if cfg.train_seconds:
        steps = calibrate_steps(cfg, model, heads, batch_stream, make_optimizer, train_step, named_of, log)
    params = named_of(model, heads)
    opt = make_optimizer(params)
    val_rng = np.random.default_rng(cfg.seed + 1)
    val = [builder.build(records[i], codes[i], "reason")
           for i in val_rng.choice(len(records), min(32, len(records)), replace=False)]
    t_train0 = time.perf_counter()
    history = []
    for step, batch in enumerate(batch_stream(rng, rng.permutation(len(records)), steps)):
        lr = cosine_lr(step, steps, cfg.lr, cfg.warmup, floor=0.1)
        loss, info = train_step(model, heads, opt, params, batch, lr)
        if (step + 1) % cfg.log_every == 0 or step == 0:
            el = time.perf_counter() - t_train0
            if (step + 1) % (4 * cfg.log_every) == 0 or step + 1 == steps:
                info.update(image_reliance(model, val, pooled_one, patches, tokenizer.ids.eos, cfg.device))
            info["ce"] = round(info["ce"], 4)
            history.append({"step": step + 1, "loss": round(loss.item(), 4), **info})
            log(f"step {step + 1}/{steps} loss {loss.item():.4f} lr {lr:.2e} {el / (step + 1):.2f} s/step "
                + " ".join(f"{k} {v:.3f}" for k, v in info.items()))
    t_train = time.perf_counter() - t_train0

    model.eval()
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_weights(state, out_dir, shards=1)
    cfg_dict = mcfg.to_dict()
    cfg_dict["cameras"] = list(cameras)      # which camera each image is (the station feeds them in this order)
    cfg_dict["training"] = {"script": "python -m app.sim.train", "seed": cfg.seed, "steps": steps,
                            "device": str(cfg.device), "lr": cfg.lr,
                            "vision_steps": vision_steps, "batch": cfg.batch, "records": len(records),
                            "expert": cfg.data.expert, "whole_number_tokens": cfg.whole_number_tokens,
                            "ordinal_sigma": cfg.ordinal_sigma, "miss_prob": cfg.data.miss_prob,
                            "steer_miss_prob": cfg.data.steer_miss_prob, "miss_m": list(cfg.data.miss_m),
                            "end_lost": cfg.data.end_lost, "wrist_fovy_deg": cfg.data.wrist_fovy_deg,
                            "offset_weight": cfg.offset_weight,
                            "wrist_look_weight": cfg.wrist_look_weight, "mix": list(cfg.mix),
                            "precision": cfg.precision}
    if cfg.data_seed is not None:
        cfg_dict["training"]["data_seed"] = cfg.data_seed
    if cfg.data.policy is not None:        # DAgger: which checkpoint drove which extra episodes
        cfg_dict["training"]["dagger"] = {"from": cfg.data.policy,
                                          "policy_digest": policy_digest(Path(cfg.data.policy)),
                                          "episodes": cfg.data.policy_episodes,
                                          "steer_episodes": cfg.data.policy_steer_episodes}
    if base is not None:
        cfg_dict["training"]["init_from"] = {"path": str(cfg.init_from), "head_warmup": cfg.head_warmup,
                                             "training": base.training}
    (out_dir / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    save_depth_decoder(vq.export_decoder(), out_dir / DEPTH_FILES[0])
    summary = {"records": len(records), "params": n_params, "steps": steps, "data_s": round(t_data, 1), "vq_s": round(t_vq, 1),
               "vision_s": round(t_vision, 1), "train_s": round(t_train, 1), "total_s": round(time.perf_counter() - t0, 1),
               "final_loss": history[-1]["loss"] if history else None}
    (out_dir / "training_log.json").write_text(json.dumps({"summary": summary, "vision_history": vision_history,
                                                              "history": history}, indent=1))
    log(json.dumps(summary))
    return summary


def continued_from(cfg: TrainConfig, out_dir: Path, log=print) -> LoadedCheckpoint:
    """The checkpoint ``cfg.init_from`` (fp32 on the CPU), checked to be one this pipeline can continue."""
    if Path(cfg.init_from).resolve() == out_dir.resolve():
        raise ValueError(f"--out {out_dir} is the checkpoint being continued: write the new one elsewhere")
    base = load_checkpoint(cfg.init_from, device="cpu", dtype=torch.float32)
    if base.depth_decoder is None:
        raise ValueError(f"{cfg.init_from}: no depth decoder, so its depth codes cannot be reproduced")
    log(f"continuing {cfg.init_from} (trained: {base.training})")
    return base


def check_continuable(base: LoadedCheckpoint, out_dir: Path, mcfg: MolmoActConfig, cameras: tuple[str, ...]) -> None:
    """Same tokenizer, model shape and cameras: otherwise its weights would mean other things here."""
    ours = json.loads((out_dir / "tokenizer.json").read_text())
    theirs = json.loads((base.path / "tokenizer.json").read_text())
    if ours != theirs:
        raise ValueError(f"{base.path}: its tokenizer is not the one this pipeline builds; it cannot be continued")
    if mcfg.to_dict() != base.config.to_dict():
        raise ValueError(f"{base.path}: its model config differs from this run's (--wrist or the model shape?)")
    if tuple(cameras) != tuple(base.cameras):
        raise ValueError(f"{base.path}: its cameras are {list(base.cameras)}, this run's {list(cameras)}")


def head_parameters(heads: dict) -> list[tuple[str, nn.Parameter]]:
    """The named parameters of the training-only heads that are in use (``None``: not used)."""
    return [p for head in heads.values() if head is not None for p in head.named_parameters()]


def fit_heads(model: MolmoAct, heads: dict, batches, make_optimizer, train_step, lr: float, log=print) -> None:
    """Fit the training-only heads (not saved with a checkpoint, so new when continuing one) with the
    model frozen, so their first, random-head gradients do not reach its trained weights."""
    head_named = head_parameters(heads)
    if not head_named:
        return
    for p in model.parameters():
        p.requires_grad_(False)
    opt = make_optimizer(head_named)
    info: dict = {}
    for batch in batches:
        _, info = train_step(model, heads, opt, head_named, batch, lr)
    for p in model.parameters():
        p.requires_grad_(True)
    log("heads fitted: " + " ".join(f"{k} {v:.3f}" for k, v in info.items() if isinstance(v, float)))


def calibrate_steps(cfg: TrainConfig, model: MolmoAct, heads: dict, batch_stream, make_optimizer, train_step,
                    named_of, log=print, probe_steps: int = 40, skip: int = 10) -> int:
    """How many steps fit in ``cfg.train_seconds``: time ``probe_steps`` real steps on a throwaway copy of
    the model and its heads (own optimizer, own batch stream), so the run itself is exactly what
    ``--steps N`` with the printed N gives. The first ``skip`` steps (allocator and kernel warm-up) are
    not timed."""
    import copy
    net, aux = copy.deepcopy(model), copy.deepcopy(heads)
    named = named_of(net, aux)
    opt = make_optimizer(named)
    t0 = None
    for step, batch in enumerate(batch_stream(np.random.default_rng(cfg.seed + 99), np.zeros(0, np.int64),
                                              probe_steps)):
        if step == skip:
            _sync(cfg.device)
            t0 = time.perf_counter()
        train_step(net, aux, opt, named, batch, cfg.lr * 0.1)
    _sync(cfg.device)
    per_step = (time.perf_counter() - t0) / (probe_steps - skip)
    steps = max(1, int(cfg.train_seconds / per_step))
    log(f"calibration: {per_step * 1000:.0f} ms/step at batch {cfg.batch} on {cfg.device}: {steps} steps fit in "
        f"{cfg.train_seconds:.0f} s (rerun with --steps {steps} for the same run)")
    del net, aux, opt
    return steps


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def policy_digest(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# data settings added after caches were written, and the value every earlier run had
SETTINGS_ADDED_LATER = {"policy_steer_episodes": 0, "wrist_fovy_deg": scene.FOVY_DEG}


def data_key(data_cfg: DataConfig) -> str:
    """What the generated data depends on: every setting but the worker count (and the policy's weights,
    not its path)."""
    settings = {k: v for k, v in asdict(data_cfg).items() if k not in ("workers", "progress")}
    for name, before in SETTINGS_ADDED_LATER.items():   # at the value every run had before, the older key
        if settings[name] == before:
            del settings[name]
    if data_cfg.policy is not None:        # the policy's states depend on its weights, not on its path
        settings["policy"] = policy_digest(Path(data_cfg.policy))
    return json.dumps({**settings, "workers": 0}, sort_keys=True)


def _cached_records(data_cfg: DataConfig, cache: Path | None, log) -> list[StepRecord]:
    """Generate the records, or read them from ``cache`` when it was written for the same config
    (the data is deterministic, so a rerun with other training settings can skip the rollouts)."""
    import pickle
    key = data_key(data_cfg)
    if cache is not None and cache.is_file():
        with cache.open("rb") as f:
            stored_key, records = pickle.load(f)
        if stored_key == key:
            log(f"data: {len(records)} steps read from {cache}")
            return records
    log(f"generating data: {key}")
    records = generate(data_cfg)
    if cache is not None:
        with cache.open("wb") as f:
            pickle.dump((key, records), f, protocol=pickle.HIGHEST_PROTOCOL)
    return records


def first_run(training: dict) -> dict:
    """The run a chain of continuations started from: ``training.init_from.training`` followed to its end."""
    while "init_from" in training:
        training = training["init_from"]["training"]
    return training


def tokenizer_seed(cfg: TrainConfig, base) -> int:
    """The seed whose corpus built the tokenizer: a continuation keeps its base's (the first run's), so that
    ``--init-from X --seed 1`` is not refused for another tokenizer after its data was generated."""
    return cfg.seed if base is None else int(first_run(base.training).get("seed", cfg.seed))


def data_config(cfg: TrainConfig) -> DataConfig:
    """The data a run trains on: from ``data_seed`` where given (so ``--seed 1 --data-seed 0`` reads the cache
    ``--seed 0`` wrote), else from the run's seed."""
    seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    return replace(cfg.data, seed=seed, image_side=IMAGE_SIDE, progress=True)


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_command(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if args.data_only:
        records = _cached_records(data_config(cfg), args.data_cache, log)
        log(f"{len(records)} steps written to {args.data_cache}")
        return 0
    train(cfg, Path(args.out), log=log, data_cache=args.data_cache)
    return 0


def _mix(text: str) -> tuple[float, float, float]:
    """``R,A,V`` → three non-negative shares that sum to 1."""
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError(f"--mix wants three shares that sum to 1, like 0.45,0.25,0.3; got {text!r}")
    return parts


WRIST_CAMERAS = {"d435": scene.FOVY_DEG, "d405": scene.D405_FOVY_DEG}


def _fovy(text: str) -> float:
    """``--wrist-fovy``: degrees, or the name of the RealSense whose vertical field of view to render (``d435``:
    every checkpoint before 2026-12-06's; its 42.6° is rounded, so a number would not reproduce its data)."""
    if (name := text.lower()) in WRIST_CAMERAS:
        return WRIST_CAMERAS[name]
    try:
        deg = float(text)
    except ValueError:
        deg = float("nan")
    if not 10.0 <= deg <= 120.0:
        raise argparse.ArgumentTypeError(f"--wrist-fovy wants degrees in 10..120 or one of "
                                         f"{', '.join(WRIST_CAMERAS)}; got {text!r}")
    return deg


def _miss_range(text: str) -> tuple[float, float]:
    """``LO,HI`` (metres) → how far beside the object a missed grasp closes, 0 < LO <= HI < 0.5."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        lo = hi = float("nan")
    if not (0 < lo <= hi < 0.5):
        raise argparse.ArgumentTypeError(f"--miss-m wants LO,HI in metres with 0 < LO <= HI < 0.5, like 0.02,0.045; "
                                         f"got {text!r}")
    return lo, hi


# The bundled checkpoint's recipe, where it differs from the dataclasses' defaults (those keep the plain
# pipeline that tests and older commands build on): the command's defaults reproduce the bundled checkpoint's
# first run (the end of the chain of ``training.init_from`` in its config.json; the two DAgger rounds on top
# are in the README).
RECIPE = {"steps": 6000, "miss_prob": 0.3, "steer_miss_prob": 0.3, "offset_weight": 1.0, "end_lost": True,
          "wrist_fovy": scene.D405_FOVY_DEG}


def parse_command(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The command line → the run's config (and the options that are not part of it)."""
    p = argparse.ArgumentParser(prog="python -m app.sim.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="assets/sim-molmoact")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=None,
                   help="seed of the generated data (default: --seed); another --seed on the same --data-cache")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--train-seconds", type=float, default=None,
                   help="train as many steps as fit in this many seconds (measured first; the log says the N "
                        "that --steps N reproduces)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-only", action="store_true",
                   help="generate the data into --data-cache and stop (several runs can then share it)")
    p.add_argument("--episodes-per-task", type=int, default=DataConfig.episodes_per_task)
    p.add_argument("--steer-episodes", type=int, default=DataConfig.steer_episodes)
    p.add_argument("--vq-steps", type=int, default=VQTrainConfig.steps)
    p.add_argument("--vision-steps", type=int, default=TrainConfig.vision_steps)
    p.add_argument("--pointer-weight", type=float, default=TrainConfig.pointer_weight)
    p.add_argument("--look-weight", type=float, default=TrainConfig.look_weight)
    p.add_argument("--wrist-look-weight", type=float, default=TrainConfig.wrist_look_weight,
                   help="attention supervision of a second head toward the named object in the wrist image, "
                        "from the positions that write the action (with --wrist)")
    p.add_argument("--offset-weight", type=float, default=RECIPE["offset_weight"],
                   help="> 0: a training-only head regresses, at the positions that write the action, where the "
                        "acted-on object is from the TCP in 3-D (needs data generated by this version)")
    p.add_argument("--mix", type=_mix, default=TrainConfig.mix, metavar="R,A,V",
                   help="shares of the reason, reason_alt (a forced other trace) and visual samples")
    p.add_argument("--workers", type=int, default=DataConfig.workers)
    p.add_argument("--miss-prob", type=float, default=RECIPE["miss_prob"],
                   help="share of pick/place episodes that first close beside the object, then recover")
    p.add_argument("--steer-miss-prob", type=float, default=RECIPE["steer_miss_prob"],
                   help="share of steer episodes (instructed A, trace to B) that first close beside B, then recover")
    p.add_argument("--end-lost", action=argparse.BooleanOptionalAction, default=RECIPE["end_lost"],
                   help="end a data episode once an object has fallen off the table or its trace runs off the "
                        "image (its expert would chase it to the workspace's edge)")
    p.add_argument("--miss-m", type=_miss_range, default=DataConfig.miss_m, metavar="LO,HI",
                   help="how far beside the object (metres, uniform) a missed grasp closes")
    p.add_argument("--wrist", action=argparse.BooleanOptionalAction, default=True,
                   help="two images, front then wrist (the bundled recipe); --no-wrist: the front camera only")
    p.add_argument("--wrist-fovy", type=_fovy, default=RECIPE["wrist_fovy"], metavar="DEG",
                   help="the sim wrist camera's vertical field of view in degrees, or d405 (58°, the bundled "
                        "recipe) / d435 (42.6°, the recipes before it); config.json records it, and app.sim.eval "
                        "renders the same")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the model's training")
    p.add_argument("--expert", choices=EXPERTS, default="servo",
                   help="the pick tasks' expert: ServoPickExpert, a law of the state (the bundled recipe), or the "
                        "waypoint script")
    p.add_argument("--whole-action-tokens", action=argparse.BooleanOptionalAction, default=True,
                   help="the tokenizer spells each action value as its one action id (the bundled recipe)")
    p.add_argument("--whole-number-tokens", action=argparse.BooleanOptionalAction, default=True,
                   help="the tokenizer spells each trace coordinate 0..255 as one token (the bundled recipe)")
    p.add_argument("--ordinal-sigma", type=float, default=0.0,
                   help="> 0: soft Gaussian targets of this width (in ids) over the action bins and the coordinates, "
                        "and their embedding rows start smooth in the value; 0 (the bundled recipe): one-hot")
    p.add_argument("--dagger-from", type=Path, default=None,
                   help="DAgger: this checkpoint drives --dagger-episodes more pick episodes, each state labelled "
                        "by the state-based expert (usually the same checkpoint as --init-from)")
    p.add_argument("--dagger-episodes", type=int, default=240)
    p.add_argument("--dagger-steer-episodes", type=int, default=0,
                   help="DAgger for steering: --dagger-from also drives this many pick episodes steered onto another "
                        "object (steer_text or steer_visual, as the eval steers), each state labelled by that "
                        "object's expert")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue training this checkpoint of the pipeline (its tokenizer, action normalization "
                        "and depth codes are kept; no vision pre-training)")
    p.add_argument("--precision", choices=PRECISIONS, default=TrainConfig.precision,
                   help="bf16 autocast or fp32 for the vision pre-training and the model (auto: bf16 where the "
                        "device multiplies it natively, else fp32; the bundled checkpoint: fp32)")
    p.add_argument("--data-cache", type=Path, default=None,
                   help="pickle of the generated data, reused when the data settings match (outside the repo)")
    args = p.parse_args(argv)
    if args.data_only and args.data_cache is None:
        p.error("--data-only needs --data-cache")
    cfg = TrainConfig(seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr, device=args.device,
                      train_seconds=args.train_seconds, threads=args.threads,
                      vision_steps=args.vision_steps, pointer_weight=args.pointer_weight,
                      look_weight=args.look_weight, wrist_look_weight=args.wrist_look_weight,
                      offset_weight=args.offset_weight,
                      init_from=args.init_from, data_seed=args.data_seed,
                      whole_action_tokens=args.whole_action_tokens,
                      whole_number_tokens=args.whole_number_tokens, ordinal_sigma=args.ordinal_sigma,
                      precision=args.precision, mix=args.mix,
                      data=DataConfig(episodes_per_task=args.episodes_per_task, steer_episodes=args.steer_episodes,
                                      wrist=args.wrist, wrist_fovy_deg=args.wrist_fovy,
                                      miss_prob=args.miss_prob,
                                      steer_miss_prob=args.steer_miss_prob, miss_m=args.miss_m,
                                      end_lost=args.end_lost,
                                      expert=args.expert,
                                      policy=None if args.dagger_from is None else str(args.dagger_from),
                                      policy_episodes=args.dagger_episodes if args.dagger_from else 0,
                                      policy_steer_episodes=args.dagger_steer_episodes if args.dagger_from else 0,
                                      workers=args.workers),
                      vq=VQTrainConfig(steps=args.vq_steps))
    return cfg, args


if __name__ == "__main__":
    sys.exit(main())

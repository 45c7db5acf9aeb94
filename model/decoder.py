"""Prefill / decode around a static KV cache, and the three ways to get an action.

* ``reason(obs)``: prompt + images → constrained answer (depth, trace, action).
* ``steer_visual(obs, trace)``: the reference's method — the edited polyline drawn on the first image,
  the trajectory-conditioned prompt, an action-only answer (new image → new prefill, in a scratch cache).
* ``steer_text(trace)``: ours — roll the reasoning cache back to the end of the depth segment (O(1)),
  force the edited trace, decode the action only. No image encoding, no prompt prefill.

Only grammar choice points call the model; forced runs are appended and forwarded together with the
next chosen token (jump-forward). Single-token steps can use static shapes (``kv_len=None``) so that on
CUDA they can be compiled/graph-captured; on CPU they attend to the filled prefix only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .actions import ActionStats, ActionTokenizer, resolve_unnorm_key, unnormalize
from .checkpoint import LoadedCheckpoint
from .depth import decode_depth_codes
from .grammar import (AnswerFormat, Forced, GrammarTokens, ParsedAnswer, Program, check_trace,
                      forced_trace_program, reasoning_program, steer_visual_program)
from .kv_cache import KVCache
from .processor import ModelInputs, reasoning_prompt, steering_prompt
from .reasoning import Observation, Reasoning

TRACE_COLOR_RGB = (0, 255, 255)


@dataclass
class DecoderConfig:
    max_seq_len: int = 2048
    answer: AnswerFormat = field(default_factory=AnswerFormat)
    # Client-side resize before the processor, as the official evaluators do (SimplerEnv: 256x256 INTER_AREA;
    # mid-training data was 320x240). It is the "model input resolution" steer_visual draws at. None = as given.
    image_size: tuple[int, int] | None = (256, 256)   # (width, height)
    trace_thickness: int = 2          # 2 as in training data, 3 as in the official steering demo
    compile_decode: bool = False      # CUDA only: torch.compile the single-token step (static shapes)


@dataclass
class SamplingConfig:
    """Greedy by default; temperature/top-p give alternative candidates (e.g. for preference pairs)."""
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


def draw_trace(image: np.ndarray, trace: Sequence[tuple[int, int]], thickness: int = 2) -> np.ndarray:
    """The edited polyline on a copy of the image, as the reference annotates: RGB (0,255,255), anti-aliased."""
    h, w = image.shape[:2]
    pts = np.array([[round(x / 255 * (w - 1)), round(y / 255 * (h - 1))] for x, y in trace], np.int32)
    out = np.ascontiguousarray(image.copy())
    if len(pts) == 1:
        cv2.circle(out, tuple(int(v) for v in pts[0]), max(1, thickness), TRACE_COLOR_RGB, -1, cv2.LINE_AA)
    else:
        cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, TRACE_COLOR_RGB, thickness, cv2.LINE_AA)
    return out


@dataclass
class _Prefix:
    """What steer_text needs from the last reason(): the cache is valid up to ``after_depth``."""
    after_depth: int
    prompt_tokens: int
    answer_until_depth: list[int]
    depth_codes: list[int]
    depth_map: object
    unnorm_key: str


class NonFiniteLogitsError(RuntimeError):
    """The model produced NaN/inf logits at a choice: no answer (and so no action) is produced."""


def resize_for_model(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class MolmoActDecoder:
    def __init__(self, ckpt: LoadedCheckpoint, config: DecoderConfig | None = None) -> None:
        self.ckpt = ckpt
        self.model = ckpt.model
        self.config = config or DecoderConfig()
        self.grammar = GrammarTokens(ckpt.tokenizer, self.config.answer, ckpt.config.n_action_bins)
        self.action_tokenizer = ActionTokenizer(base_id=ckpt.tokenizer.action_base_id,
                                                n_bins=ckpt.config.n_action_bins)
        max_len = min(self.config.max_seq_len, ckpt.config.llm_config.max_position_embeddings)
        self.cache = self.model.allocate_cache(max_len)     # the reasoning prefix, kept for steer_text
        self.scratch = self.model.allocate_cache(max_len)   # steer_visual's own prefill
        self.timer = _Timer(self.model.device)
        self._prefix: _Prefix | None = None
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}
        self._step: Callable = self._decode_one_static
        if self.config.compile_decode and self.model.device.type == "cuda":
            self._step = torch.compile(self._decode_one_static, mode="reduce-overhead", fullgraph=True)

    # -- the two model calls ---------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, cache: KVCache, inputs: ModelInputs, extra_ids: Sequence[int] = ()) -> torch.Tensor:
        """Images + prompt (+ forced answer start) into ``cache`` from position 0; last hidden state [D]."""
        if cache is self.cache:
            self._prefix = None  # whatever steer_text could have continued is being overwritten
        dev = self.model.device
        ids = torch.cat([inputs.input_ids, torch.tensor([list(extra_ids)], dtype=torch.long)], 1).to(dev)
        n = ids.shape[1]
        cache.check_room(n)
        embeds = self.model.embed(ids, inputs.crops.to(dev), inputs.pooled_patches_idx.to(dev))
        hidden = self.model(embeds, torch.arange(n, device=dev), cache, kv_len=n)
        cache.length = n
        return hidden[0, -1]

    @torch.inference_mode()
    def decode(self, cache: KVCache, ids: Sequence[int]) -> torch.Tensor:
        """Append ``ids`` (one chosen token, possibly after a forced run) at ``cache.length``; last hidden [D]."""
        start, n = cache.length, len(ids)
        cache.check_room(start + n)
        dev = self.model.device
        if n == 1:
            hidden = self._step(cache, torch.tensor([[ids[0]]], device=dev), torch.tensor([start], device=dev),
                                start + 1)
        else:
            x = self.model.embed(torch.tensor([list(ids)], device=dev))
            hidden = self.model(x, torch.arange(start, start + n, device=dev), cache, kv_len=start + n)[0, -1]
        cache.length = start + n
        return hidden

    def _decode_one_static(self, cache: KVCache, token: torch.Tensor, pos: torch.Tensor, kv_len: int) -> torch.Tensor:
        """One token; static shapes on CUDA (whole-cache attention with a mask), prefix-only on CPU."""
        x = self.model.embed(token)
        static = self.model.device.type == "cuda"
        return self.model(x, pos, cache, kv_len=None if static else kv_len)[0, -1]

    # -- choosing ----------------------------------------------------------------------------------
    def allowed_logits(self, hidden: torch.Tensor, allowed: Sequence[int]) -> torch.Tensor:
        """Logits of the allowed ids only: the grammar never allows more than 256, so the LM head's
        152k-row matmul shrinks to a gather of those rows (same per-row dot products)."""
        key = tuple(allowed)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._rows[key] = torch.tensor(key, device=hidden.device)
        return self.model.logits_for(hidden, rows).float()

    def pick(self, hidden: torch.Tensor, allowed: Sequence[int], sampling: SamplingConfig | None,
             gen: torch.Generator | None) -> int:
        scores = self.allowed_logits(hidden, allowed)
        if not bool(torch.isfinite(scores).all()):
            # Broken weights or an overflow: refuse rather than let the grammar turn garbage into an action.
            bad = int((~torch.isfinite(scores)).sum())
            raise NonFiniteLogitsError(f"{bad} of {len(allowed)} allowed logits are NaN/inf; no action produced")
        if sampling is None or sampling.temperature == 0:
            return int(allowed[int(torch.argmax(scores))])
        probs = torch.softmax(scores / sampling.temperature, dim=-1).cpu()
        if sampling.top_p < 1:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < sampling.top_p
            mask = torch.zeros_like(probs, dtype=torch.bool)
            mask[order[keep]] = True
            probs = torch.where(mask, probs, torch.zeros_like(probs))
            probs = probs / probs.sum()
        return int(allowed[int(torch.multinomial(probs, 1, generator=gen))])

    def _drive(self, program: Program, cache: KVCache, first: Callable[[list[int]], torch.Tensor],
               sampling: SamplingConfig | None, timings: dict[str, float]) -> tuple[ParsedAnswer, list[int], int]:
        """Run a grammar program: forced runs accumulate, each choice triggers one model call."""
        gen = None
        if sampling is not None and sampling.temperature > 0:
            gen = torch.Generator()
            if sampling.seed is None:
                gen.seed()      # a fresh candidate each call
            else:
                gen.manual_seed(sampling.seed)
        answer: list[int] = []
        pending: list[int] = []
        calls = 0
        started = False
        try:
            step = next(program)
            while True:
                if isinstance(step, Forced):
                    pending += step.ids
                    answer += step.ids
                    step = program.send(None)
                    continue
                t0 = self.timer.now()
                if not started:
                    hidden = first(pending)
                    started = True
                    key = "prefill"
                else:
                    hidden = self.decode(cache, pending)
                    calls += 1
                    key = step.segment
                token = self.pick(hidden, step.allowed, sampling, gen)
                timings[key] = timings.get(key, 0.0) + (self.timer.now() - t0) * 1e3
                answer.append(token)
                pending = [token]
                step = program.send(token)
        except StopIteration as stop:
            return stop.value, answer, calls

    # -- results -------------------------------------------------------------------------------------
    def _stats(self, unnorm_key: str | None) -> tuple[str, ActionStats]:
        key = resolve_unnorm_key(self.ckpt.norm_stats, unnorm_key)
        stats = ActionStats.from_norm_stats(self.ckpt.norm_stats, key)
        if stats.action_dim != self.config.answer.action_dim:
            raise ValueError(f"norm stats {key!r} are {stats.action_dim}-D but the answer format is "
                             f"{self.config.answer.action_dim}-D")
        return key, stats

    def _actions(self, token_ids: list[int], stats: ActionStats) -> tuple[np.ndarray, np.ndarray]:
        normalized = self.action_tokenizer.decode_chunk(token_ids, self.config.answer.action_dim)
        return normalized, unnormalize(normalized, stats)

    def _depth_map(self, codes: list[int]):
        if self.ckpt.depth_decoder is None or not codes:
            return None
        return decode_depth_codes(self.ckpt.depth_decoder, codes)

    def _text(self, ids: list[int]) -> str:
        return self.ckpt.tokenizer.decode(ids, skip_special_tokens=True)

    # -- public API ----------------------------------------------------------------------------------
    def reason(self, obs: Observation, sampling: SamplingConfig | None = None) -> Reasoning:
        key, stats = self._stats(obs.unnorm_key)
        timings: dict[str, float] = {}
        t_all = self.timer.now()
        images = [resize_for_model(im, self.config.image_size) for im in obs.images]
        inputs = self.ckpt.processor(images, reasoning_prompt(obs.instruction, len(images)))
        timings["preprocess"] = (self.timer.now() - t_all) * 1e3
        # The first trace choice forwards [last depth code, <DEPTH_END>, …], so after reason() the cache
        # holds everything through the last depth code: that is where steer_text resumes.
        depth_until = len(self.grammar.depth_prefix) + self.config.answer.depth_codes
        parsed, answer, calls = self._drive(reasoning_program(self.grammar), self.cache,
                                            lambda extra: self.prefill(self.cache, inputs, extra),
                                            sampling, timings)
        timings["decode"] = sum(timings.get(k, 0.0) for k in ("depth", "trace", "action"))
        depth_map = self._depth_map(parsed.depth_codes)
        normalized, actions = self._actions(parsed.action_token_ids, stats)
        timings["total"] = (self.timer.now() - t_all) * 1e3
        self._prefix = _Prefix(after_depth=inputs.length + depth_until, prompt_tokens=inputs.length,
                               answer_until_depth=answer[:depth_until], depth_codes=parsed.depth_codes,
                               depth_map=depth_map, unnorm_key=key)
        return Reasoning(mode="reason", depth_codes=parsed.depth_codes, depth_map=depth_map, trace=parsed.trace,
                         actions_normalized=normalized, actions=actions, action_token_ids=parsed.action_token_ids,
                         token_ids=answer, text=self._text(answer), unnorm_key=key, timings_ms=timings,
                         prompt_tokens=inputs.length, decode_steps=calls)

    def steer_text(self, trace: Sequence[Sequence[float]], sampling: SamplingConfig | None = None) -> Reasoning:
        """Re-decode the action with an edited trace, reusing the cached images + prompt + depth."""
        points = check_trace(trace, self.config.answer.max_points)
        if self._prefix is None:
            raise RuntimeError("steer_text needs a completed reason() on this decoder first")
        prefix = self._prefix
        _, stats = self._stats(prefix.unnorm_key)
        timings: dict[str, float] = {}
        t_all = self.timer.now()
        self.cache.truncate(prefix.after_depth)      # O(1): later slots are masked, then overwritten
        self.cache.length = prefix.after_depth
        parsed, answer, calls = self._drive(forced_trace_program(self.grammar, points), self.cache,
                                            lambda forced: self.decode(self.cache, forced), sampling, timings)
        timings["steer"] = timings.pop("prefill", 0.0)  # the first call here is a short decode, not a prefill
        normalized, actions = self._actions(parsed.action_token_ids, stats)
        timings["total"] = (self.timer.now() - t_all) * 1e3
        tokens = prefix.answer_until_depth + answer
        return Reasoning(mode="steer_text", depth_codes=prefix.depth_codes, depth_map=prefix.depth_map,
                         trace=points, actions_normalized=normalized, actions=actions,
                         action_token_ids=parsed.action_token_ids, token_ids=tokens, text=self._text(tokens),
                         unnorm_key=prefix.unnorm_key, timings_ms=timings, prompt_tokens=prefix.prompt_tokens,
                         decode_steps=calls + 1)

    def steer_visual(self, obs: Observation, trace: Sequence[Sequence[float]],
                     sampling: SamplingConfig | None = None) -> Reasoning:
        """The reference's steering: the trace drawn on the first image, the trajectory-conditioned prompt."""
        points = check_trace(trace, self.config.answer.max_points)
        key, stats = self._stats(obs.unnorm_key)
        timings: dict[str, float] = {}
        t_all = self.timer.now()
        images = [resize_for_model(im, self.config.image_size) for im in obs.images]
        images[0] = draw_trace(images[0], points, self.config.trace_thickness)
        inputs = self.ckpt.processor(images, steering_prompt(obs.instruction, len(images)))
        timings["preprocess"] = (self.timer.now() - t_all) * 1e3
        parsed, answer, calls = self._drive(steer_visual_program(self.grammar), self.scratch,
                                            lambda extra: self.prefill(self.scratch, inputs, extra),
                                            sampling, timings)
        timings["decode"] = timings.get("action", 0.0)
        normalized, actions = self._actions(parsed.action_token_ids, stats)
        timings["total"] = (self.timer.now() - t_all) * 1e3
        return Reasoning(mode="steer_visual", depth_codes=[], depth_map=None, trace=points,
                         actions_normalized=normalized, actions=actions, action_token_ids=parsed.action_token_ids,
                         token_ids=answer, text=self._text(answer), unnorm_key=key, timings_ms=timings,
                         prompt_tokens=inputs.length, decode_steps=calls)

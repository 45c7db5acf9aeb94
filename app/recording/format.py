"""The LeRobotDataset v3.0 layout as this station writes it: paths, features, depth quantization, stats.

Facts taken from lerobot (``src/lerobot/datasets/{utils,dataset_metadata,feature_utils,compute_stats,
depth_utils}.py`` and ``configs/video.py`` at 7427f31, read for facts, not copied):

- ``meta/info.json`` holds ``codebase_version`` "v3.0", ``fps`` (int), the path templates, the totals,
  ``splits`` and ``features`` (``dtype`` / ``shape`` / ``names``, and ``info`` for videos).
- Many episodes share one ``data/chunk-XXX/file-YYY.parquet`` (capped at ``data_files_size_in_mb``) and
  one ``videos/<key>/chunk-XXX/file-YYY.mp4`` (capped at ``video_files_size_in_mb``); a chunk holds at most
  ``chunks_size`` files. Episode boundaries live in ``meta/episodes/chunk-XXX/file-YYY.parquet``.
- Every frame carries ``timestamp`` (= frame_index / fps), ``frame_index``, ``episode_index``, ``index``
  (global) and ``task_index``.
- A depth camera is a video feature of shape (H, W, 1) with ``info.is_depth_map`` true. Depth is
  quantized to 12-bit codes (log scale by default: depth_min 0.01 m, depth_max 10 m, shift 3.5 m) and
  encoded losslessly with HEVC (libx265, ``gray12le``); RGB defaults to AV1 (libsvtav1, ``yuv420p``,
  g=2, crf=30, preset 12).
- Stats: per feature ``min``/``max``/``mean``/``std``/``count`` and quantiles ``q01``..``q99``; images
  per channel, shape (C, 1, 1), RGB divided by 255, depth left in its unit.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

CODEBASE_VERSION = "v3.0"

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
# Ours, outside lerobot's folders: the sensor's depth without quantization, one lossless file per episode.
EXACT_DEPTH_PATH = "extras/depth/{video_key}/chunk-{chunk_index:03d}/episode-{episode_index:06d}.mkv"
STAGING_DIR = ".staging"

DEFAULT_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

MODES = ("reason", "steer_visual", "steer_text")               # model.reasoning.MODES
STATUSES = ("pending", "preview", "sent", "refused", "no_arm", "failed")  # app.session.ActionStep.status
MAX_TRACE_POINTS = 5                                            # the grammar's bound
TRACE_MAX_COORD = 255                                           # model space 0..255
NUM_DEPTH_TOKENS = 100                                          # depth codes per answer
POSE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)
STATS_MAX_IMAGES = 100                                          # lerobot samples at most ~100 frames per episode


# ------------------------------------------------------------------------------------------ depth

@dataclass(frozen=True)
class DepthQuantizer:
    """lerobot's 12-bit depth codes: ``rint(norm * 4095)`` with ``norm`` linear or log in metres.

    Code 0 means "at or below ``depth_min``" (1 cm by default); no sensor reports that, so the station's
    reader turns code 0 back into 0 (invalid), which is what the camera said. lerobot's own reader
    returns ``depth_min`` there.
    """
    depth_min: float = 0.01
    depth_max: float = 10.0
    shift: float = 3.5
    use_log: bool = True
    bits: int = 12

    def __post_init__(self) -> None:
        if not (self.depth_max > self.depth_min >= 0):
            raise ValueError(f"depth range must have 0 <= depth_min < depth_max, got "
                             f"{self.depth_min}..{self.depth_max}")
        if self.use_log and self.depth_min + self.shift <= 0:
            raise ValueError("depth_min + shift must be positive for log quantization")

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    def _bounds(self) -> tuple[float, float]:
        if self.use_log:
            return math.log(self.depth_min + self.shift), math.log(self.depth_max + self.shift)
        return self.depth_min, self.depth_max

    def quantize(self, depth_m: np.ndarray) -> np.ndarray:
        d = np.asarray(depth_m, dtype=np.float32)
        d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
        lo, hi = self._bounds()
        if self.use_log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log(np.maximum(d + np.float32(self.shift), np.float32(1e-12)))
        else:
            v = d
        norm = (v - lo) / (hi - lo)
        return np.rint(norm * self.qmax).clip(0, self.qmax).astype(np.uint16)

    def dequantize(self, codes: np.ndarray, zero_is_invalid: bool = True) -> np.ndarray:
        c = np.asarray(codes).astype(np.float32)
        lo, hi = self._bounds()
        v = c * np.float32((hi - lo) / self.qmax) + np.float32(lo)
        d = (np.exp(v) - np.float32(self.shift)) if self.use_log else v
        d = np.clip(d, self.depth_min, self.depth_max).astype(np.float32)
        if zero_is_invalid:
            d[np.asarray(codes) == 0] = 0.0
        return d

    def step_at(self, depth_m: float) -> float:
        """The code spacing (metres) at a given depth: the worst-case error is half of it."""
        lo, hi = self._bounds()
        if self.use_log:
            return (depth_m + self.shift) * (hi - lo) / self.qmax
        return (hi - lo) / self.qmax

    def info(self) -> dict[str, Any]:
        return {"video.depth_min": self.depth_min, "video.depth_max": self.depth_max,
                "video.shift": self.shift, "video.use_log": self.use_log}

    @classmethod
    def from_info(cls, info: dict | None) -> "DepthQuantizer":
        info = info or {}
        kw = {}
        for name in ("depth_min", "depth_max", "shift", "use_log"):
            v = info.get(f"video.{name}")
            if v is not None:
                kw[name] = v
        return cls(**kw)


# ---------------------------------------------------------------------------------------- encoders

@dataclass(frozen=True)
class VideoEncoding:
    """What goes into ``features[key]["info"]`` as ``video.*`` besides what is probed from the file."""
    codec: str                                   # the encoder's name (libsvtav1, hevc -> libx265, ...)
    pix_fmt: str
    g: int | None = 2
    crf: int | None = 30
    preset: int | str | None = None
    fast_decode: int = 0
    extra_options: dict[str, str] = field(default_factory=dict)

    def options(self) -> dict[str, str]:
        opts: dict[str, str] = {}
        if self.g is not None:
            opts["g"] = str(self.g)
        if self.codec == "libsvtav1":
            if self.crf is not None:
                opts["crf"] = str(self.crf)
            if self.preset is not None:
                opts["preset"] = str(self.preset)
            opts["svtav1-params"] = f"fast-decode={max(0, min(2, self.fast_decode))}"
        elif self.codec in ("h264", "hevc", "libx264", "libx265"):
            if self.crf is not None:
                opts["crf"] = str(self.crf)
            if self.preset is not None:
                opts["preset"] = str(self.preset)
        for k, v in self.extra_options.items():
            opts.setdefault(k, str(v))
        return opts

    def info(self) -> dict[str, Any]:
        return {"video.pix_fmt": self.pix_fmt, "video.g": self.g, "video.crf": self.crf,
                "video.preset": self.preset, "video.fast_decode": self.fast_decode,
                "video.video_backend": "pyav", "video.extra_options": dict(self.extra_options)}


def rgb_encoding(crf: int = 30) -> VideoEncoding:
    """lerobot's RGB default (``RGBEncoderConfig``): AV1 through libsvtav1, yuv420p, g=2, crf 30, preset 12."""
    return VideoEncoding(codec="libsvtav1", pix_fmt="yuv420p", g=2, crf=crf, preset=12)


def depth_encoding() -> VideoEncoding:
    """lerobot's depth default (``DepthEncoderConfig``): HEVC (libx265) gray12le, lossless, g=2.

    Two additions to lerobot's ``x265-params``: ``bframes=0``, because libx265 hands back a garbage DTS for
    the first packet of a 1-2 frame stream with B-frames (the mp4 muxer then fails, about one time in
    six; seen with PyAV 15.1 / x265 4.1), and ``log-level=error``, which only silences x265's banner."""
    return VideoEncoding(codec="hevc", pix_fmt="gray12le", g=2, crf=30, preset=None,
                         extra_options={"x265-params": "lossless=1:bframes=0:log-level=error"})


# ---------------------------------------------------------------------------------------- features

def rgb_key(camera: str) -> str:
    return f"observation.images.{camera}"


def depth_key(camera: str) -> str:
    return f"observation.images.{camera}_depth"


def intrinsics_key(camera: str) -> str:
    # Not under "observation.": lerobot's policies take every observation.* feature as a state input.
    return f"camera.{camera}.intrinsics"


def camera_time_key(camera: str) -> str:
    return f"camera.{camera}.timestamp"


def build_features(camera_keys: Sequence[str], image_size: tuple[int, int], *, depth: bool = True,
                   action_names: Sequence[str] = POSE_NAMES, state_names: Sequence[str] = POSE_NAMES,
                   depth_quantizer: DepthQuantizer | None = None) -> dict[str, dict]:
    """Every feature of a station episode, in info.json's form (shapes as lists)."""
    h, w = int(image_size[0]), int(image_size[1])
    q = depth_quantizer or DepthQuantizer()
    feats: dict[str, dict] = {}
    for cam in camera_keys:
        feats[rgb_key(cam)] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                               "info": {"is_depth_map": False}}
        if depth:
            feats[depth_key(cam)] = {"dtype": "video", "shape": [h, w, 1],
                                     "names": ["height", "width", "channels"],
                                     "info": {"is_depth_map": True, "depth_unit": "m", **q.info()}}
    feats["observation.state"] = {"dtype": "float32", "shape": [len(state_names)], "names": list(state_names)}
    feats["action"] = {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names)}
    mode_info = {"categories": list(MODES)}
    trace_names = ["waypoint", "xy"]
    feats.update({
        "molmoact.action": {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names)},
        "molmoact.action_normalized": {"dtype": "float32", "shape": [len(action_names)],
                                       "names": list(action_names)},
        "molmoact.trace": {"dtype": "int16", "shape": [MAX_TRACE_POINTS, 2], "names": trace_names},
        "molmoact.trace_len": {"dtype": "int16", "shape": [1], "names": None},
        "molmoact.model_trace": {"dtype": "int16", "shape": [MAX_TRACE_POINTS, 2], "names": trace_names},
        "molmoact.model_trace_len": {"dtype": "int16", "shape": [1], "names": None},
        "molmoact.depth_codes": {"dtype": "int16", "shape": [NUM_DEPTH_TOKENS], "names": None},
        "molmoact.mode": {"dtype": "int16", "shape": [1], "names": None, "info": mode_info},
        "intervention": {"dtype": "bool", "shape": [1], "names": None},
        "sent": {"dtype": "bool", "shape": [1], "names": None},
        "safety.clipped": {"dtype": "bool", "shape": [1], "names": None},
        "safety.reasons": {"dtype": "string", "shape": [1], "names": None},
        "step.status": {"dtype": "int16", "shape": [1], "names": None, "info": {"categories": list(STATUSES)}},
        "step.index": {"dtype": "int64", "shape": [1], "names": None},
        # seconds since the episode started (its row's station/started_at): float32 in lerobot's tensors
        # would blur an epoch time to minutes, an elapsed time keeps ~0.2 ms over an hour
        "step.elapsed": {"dtype": "float64", "shape": [1], "names": None},
    })
    for cam in camera_keys:
        feats[intrinsics_key(cam)] = {"dtype": "float32", "shape": [4], "names": ["fx", "fy", "cx", "cy"]}
        feats[camera_time_key(cam)] = {"dtype": "float64", "shape": [1], "names": None}
    feats.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})
    return feats


def video_keys(features: dict[str, dict]) -> list[str]:
    return [k for k, f in features.items() if f.get("dtype") == "video"]


def is_depth(feature: dict) -> bool:
    info = feature.get("info") or {}
    return bool(info.get("is_depth_map") or info.get("video.is_depth_map"))


def comparable(features: dict[str, dict]) -> dict[str, tuple]:
    """What must agree for a new session to append to an existing dataset."""
    return {k: (f.get("dtype"), tuple(f.get("shape") or ()), is_depth(f)) for k, f in features.items()}


def empty_info(features: dict[str, dict], fps: int, robot_type: str | None, *, chunks_size: int,
               data_files_size_in_mb: int, video_files_size_in_mb: int) -> dict[str, Any]:
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
        "fps": int(fps),
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_keys(features) else None,
        "features": features,
    }


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """lerobot's ``update_chunk_file_indices``: a chunk holds ``chunks_size`` files."""
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


# -------------------------------------------------------------------------------------------- stats

def _quantiles(x: np.ndarray) -> dict[str, np.ndarray]:
    if not np.isfinite(x).any():
        qs = np.zeros((len(QUANTILES),) + x.shape[1:])
    else:
        qs = np.nanquantile(x, QUANTILES, axis=0)
    return {k: np.asarray(qs[i], dtype=np.float64) for i, k in enumerate(QUANTILE_KEYS)}


def _finite_or_zero(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, 0.0)


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats over the frames (axis 0). Scalars (N,) or (N, 1) give shape (1,).

    NaN-aware (a model action that came out NaN does not poison the dataset's stats)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)         # an all-NaN column: its stats are 0
        out = {"min": np.nanmin(x, axis=0), "max": np.nanmax(x, axis=0), "mean": np.nanmean(x, axis=0),
               "std": np.nanstd(x, axis=0)}
        out = {k: _finite_or_zero(v) for k, v in out.items()}
        out.update({k: _finite_or_zero(v) for k, v in _quantiles(x).items()})
    out["count"] = np.array([x.shape[0]], dtype=np.int64)
    return out


def sample_indices(n: int, max_samples: int = STATS_MAX_IMAGES) -> np.ndarray:
    k = min(n, max_samples)
    return np.round(np.linspace(0, n - 1, k)).astype(int) if n else np.zeros(0, int)


def downsample(img: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """lerobot's ``auto_downsample_height_width`` on an HxW[xC] image."""
    h, w = img.shape[:2]
    if max(h, w) < threshold:
        return img.copy()
    f = int(w / target) if w > h else int(h / target)
    return img[::f, ::f].copy()                 # a copy: a view would keep the full frame alive


def image_stats(samples: Iterable[np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """Per-channel stats over sampled frames, shape (C, 1, 1); values divided by ``scale``."""
    arrs = [np.asarray(s, dtype=np.float64) for s in samples]
    arrs = [a[..., None] if a.ndim == 2 else a for a in arrs]
    count = len(arrs)
    pix = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrs], axis=0) / scale
    st = feature_stats(pix)
    out = {k: v.reshape(-1, 1, 1) for k, v in st.items() if k != "count"}
    out["count"] = np.array([count], dtype=np.int64)
    return out


def aggregate_stats(parts: Sequence[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats as lerobot does: count-weighted mean, pooled variance, min of mins,
    max of maxes, and for quantiles the conservative envelope (min for <= q50, max above)."""
    keys = {k for p in parts for k in p}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        fs = [p[key] for p in parts if key in p]
        means = np.stack([np.asarray(f["mean"], float) for f in fs])
        var = np.stack([np.asarray(f["std"], float) ** 2 for f in fs])
        counts = np.stack([np.asarray(f["count"], float) for f in fs])
        total = counts.sum(axis=0)
        c = counts
        while c.ndim < means.ndim:
            c = c[..., None]
        mean = (means * c).sum(axis=0) / total
        variance = ((var + (means - mean) ** 2) * c).sum(axis=0) / total
        agg = {"min": np.min(np.stack([np.asarray(f["min"], float) for f in fs]), axis=0),
               "max": np.max(np.stack([np.asarray(f["max"], float) for f in fs]), axis=0),
               "mean": mean, "std": np.sqrt(variance), "count": total.astype(np.int64)}
        for qk in QUANTILE_KEYS:
            if all(qk in f for f in fs):
                vals = np.stack([np.asarray(f[qk], float) for f in fs])
                agg[qk] = vals.min(axis=0) if int(qk[1:]) <= 50 else vals.max(axis=0)
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in sorted(stats.items())}


def stats_from_json(data: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    return {k: {s: np.atleast_1d(np.asarray(v)) for s, v in st.items()} for k, st in data.items()}

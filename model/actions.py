"""Action tokens <-> bins <-> continuous robot actions, as MolmoAct discretises them.

Each action dimension is one token counted *down* from `base_id` (151643 for the Qwen
vocabulary, smaller for tiny checkpoints): `digitized = base_id - token_id` is in
1..n_bins.  Normalized values live in [-1, 1] and are mapped to real units with the
dataset's q01/q99 statistics.  The gripper (last dimension) is never un-normalized,
matching the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

QWEN_ACTION_BASE_ID = 151643  # id of <|endoftext|> == Qwen BPE vocabulary size
DEFAULT_N_BINS = 256
DEFAULT_ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper

ArrayLike = Sequence[float] | np.ndarray


class UnnormKeyError(ValueError):
    """The dataset statistics key could not be resolved (empty or ambiguous stats)."""


class UnknownUnnormKeyError(UnnormKeyError, KeyError):
    """A requested unnorm key is not among the checkpoint's dataset statistics."""

    def __init__(self, key: str, available: Sequence[str]) -> None:
        self.key = key
        self.available = list(available)
        super().__init__(
            f"unknown unnorm key {key!r}; available keys: {', '.join(map(repr, self.available))}"
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


# ---------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class ActionTokenizer:
    """Maps action token ids to bin indices and normalized values, and back."""

    base_id: int = QWEN_ACTION_BASE_ID
    n_bins: int = DEFAULT_N_BINS

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.base_id < self.n_bins:
            raise ValueError(
                f"base_id {self.base_id} < n_bins {self.n_bins}: token ids would be negative"
            )

    @property
    def token_range(self) -> tuple[int, int]:
        """Inclusive (lowest, highest) id of an action token."""
        return self.base_id - self.n_bins, self.base_id - 1

    @property
    def bins(self) -> np.ndarray:
        """Bin edges over [-1, 1] (n_bins values)."""
        return np.linspace(-1.0, 1.0, self.n_bins)

    @property
    def bin_centers(self) -> np.ndarray:
        """Midpoints between consecutive edges (n_bins - 1 values)."""
        edges = self.bins
        return (edges[:-1] + edges[1:]) / 2.0

    def is_action_token(self, token_id: int) -> bool:
        lo, hi = self.token_range
        return lo <= int(token_id) <= hi

    def tokens_to_bins(self, token_ids: Sequence[int] | np.ndarray, strict: bool = False) -> np.ndarray:
        """Token ids -> bin-centre indices (0..n_bins-2), clipped like the reference.

        With `strict=True` ids outside `token_range` raise instead of being clipped.
        """
        ids = _as_int_array(token_ids)
        if strict:
            lo, hi = self.token_range
            bad = ids[(ids < lo) | (ids > hi)]
            if bad.size:
                raise ValueError(
                    f"token id {int(bad[0])} is not an action token (range {lo}..{hi})"
                )
        digitized = self.base_id - ids
        return np.clip(digitized - 1, 0, self.n_bins - 2)

    def bins_to_normalized(self, bin_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Bin-centre indices -> normalized values in (-1, 1)."""
        idx = _as_int_array(bin_indices)
        if idx.size and (idx.min() < 0 or idx.max() > self.n_bins - 2):
            raise ValueError(f"bin index out of range [0, {self.n_bins - 2}]")
        return self.bin_centers[idx]

    def decode(self, token_ids: Sequence[int] | np.ndarray, strict: bool = False) -> np.ndarray:
        """Token ids -> normalized values (same shape as the input)."""
        return self.bins_to_normalized(self.tokens_to_bins(token_ids, strict=strict))

    def decode_chunk(
        self,
        token_ids: Sequence[int] | np.ndarray,
        action_dim: int = DEFAULT_ACTION_DIM,
        strict: bool = False,
    ) -> np.ndarray:
        """Flat list of k*action_dim ids -> normalized array [k, action_dim]."""
        ids = _as_int_array(token_ids).reshape(-1)
        _check_chunk_length(ids.size, action_dim)
        return self.decode(ids, strict=strict).reshape(-1, action_dim)

    def encode(self, normalized: ArrayLike) -> list[int]:
        """Normalized values (any shape, row-major) -> token ids; values clipped to [-1, 1]."""
        values = np.asarray(normalized, dtype=np.float64).reshape(-1)
        _require_finite(values, "normalized action")
        digitized = np.digitize(np.clip(values, -1.0, 1.0), self.bins)
        return [int(t) for t in self.base_id - digitized]


def _as_int_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"expected integer token ids / indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_chunk_length(n_tokens: int, action_dim: int) -> None:
    if action_dim < 1:
        raise ValueError(f"action_dim must be >= 1, got {action_dim}")
    if n_tokens == 0:
        raise ValueError("no action tokens to decode")
    if n_tokens % action_dim:
        raise ValueError(
            f"{n_tokens} action tokens is not a multiple of the action dimension {action_dim}"
        )


def _require_finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or inf: {values.tolist()}")


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ActionStats:
    """Per-dimension q01/q99 of a dataset's actions, plus which dims get un-normalized.

    `gripper_raw` reproduces the reference rule that the last dimension is always left
    as its normalized bin centre, whatever `mask` says.
    """

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    gripper_raw: bool = True

    def __post_init__(self) -> None:
        q01 = np.asarray(self.q01, dtype=np.float64).reshape(-1)
        q99 = np.asarray(self.q99, dtype=np.float64).reshape(-1)
        mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        if not (q01.size == q99.size == mask.size) or q01.size == 0:
            raise ValueError(
                f"q01/q99/mask lengths differ or are empty: {q01.size}/{q99.size}/{mask.size}"
            )
        _require_finite(q01, "q01")
        _require_finite(q99, "q99")
        object.__setattr__(self, "q01", q01)
        object.__setattr__(self, "q99", q99)
        object.__setattr__(self, "mask", mask)

    @property
    def action_dim(self) -> int:
        return int(self.q01.size)

    @property
    def effective_mask(self) -> np.ndarray:
        """Mask actually applied: `mask` with the gripper forced off when `gripper_raw`."""
        mask = self.mask.copy()
        if self.gripper_raw:
            mask[-1] = False
        return mask

    @classmethod
    def from_norm_stats(
        cls, norm_stats: Mapping[str, Any], unnorm_key: str | None = None
    ) -> "ActionStats":
        """Read `norm_stats[unnorm_key]["action"]` (q01, q99, optional mask)."""
        key = resolve_unnorm_key(norm_stats, unnorm_key)
        entry = norm_stats[key]
        action = entry.get("action") if isinstance(entry, Mapping) else None
        if not isinstance(action, Mapping) or "q01" not in action or "q99" not in action:
            raise ValueError(f"norm_stats[{key!r}] has no 'action' entry with q01 and q99")
        q01 = np.asarray(action["q01"], dtype=np.float64)
        mask = action.get("mask")
        mask = np.ones(q01.shape, dtype=bool) if mask is None else mask
        return cls(q01=q01, q99=np.asarray(action["q99"], dtype=np.float64), mask=mask)


def resolve_unnorm_key(norm_stats: Mapping[str, Any], unnorm_key: str | None) -> str:
    """Pick the dataset statistics key the way the reference model does."""
    if not norm_stats:
        raise UnnormKeyError("the checkpoint has no dataset statistics (norm_stats is empty)")
    keys = list(norm_stats)
    if unnorm_key is None:
        if len(keys) == 1:
            return keys[0]
        raise UnnormKeyError(
            "the checkpoint has statistics for several datasets; choose an unnorm key from: "
            + ", ".join(map(repr, keys))
        )
    if unnorm_key not in norm_stats:
        raise UnknownUnnormKeyError(unnorm_key, keys)
    return unnorm_key


def _check_dim(values: np.ndarray, stats: ActionStats, what: str) -> None:
    if values.ndim == 0 or values.shape[-1] != stats.action_dim:
        raise ValueError(
            f"{what} has shape {values.shape}; last dimension must be {stats.action_dim}"
        )


def unnormalize(normalized: ArrayLike, stats: ActionStats) -> np.ndarray:
    """[-1, 1] values -> dataset units on masked dims; others (and the gripper) pass through."""
    values = np.asarray(normalized, dtype=np.float64)
    _check_dim(values, stats, "normalized actions")
    _require_finite(values, "normalized action")
    scaled = 0.5 * (values + 1.0) * (stats.q99 - stats.q01) + stats.q01
    return np.where(stats.effective_mask, scaled, values)


def normalize(actions: ArrayLike, stats: ActionStats) -> np.ndarray:
    """Dataset units -> [-1, 1] on masked dims (clipped); a zero q01..q99 range maps to 0."""
    values = np.asarray(actions, dtype=np.float64)
    _check_dim(values, stats, "actions")
    _require_finite(values, "action")
    span = stats.q99 - stats.q01
    safe_span = np.where(span == 0.0, 1.0, span)
    scaled = np.where(span == 0.0, 0.0, 2.0 * (values - stats.q01) / safe_span - 1.0)
    return np.where(stats.effective_mask, np.clip(scaled, -1.0, 1.0), values)


# ---------------------------------------------------------------------------- end to end


@dataclass
class DecodedActions:
    """A decoded action chunk; every array is [k, action_dim]."""

    token_ids: np.ndarray
    bin_indices: np.ndarray
    normalized: np.ndarray
    actions: np.ndarray


def decode_actions(
    token_ids: Sequence[int] | np.ndarray,
    tokenizer: ActionTokenizer,
    stats: ActionStats,
    strict: bool = False,
) -> DecodedActions:
    """Generated action token ids -> un-normalized action chunk."""
    ids = _as_int_array(token_ids).reshape(-1)
    _check_chunk_length(ids.size, stats.action_dim)
    bins = tokenizer.tokens_to_bins(ids, strict=strict)
    normalized = tokenizer.bins_to_normalized(bins)
    shape = (-1, stats.action_dim)
    return DecodedActions(
        token_ids=ids.reshape(shape),
        bin_indices=bins.reshape(shape),
        normalized=normalized.reshape(shape),
        actions=unnormalize(normalized.reshape(shape), stats),
    )


def encode_actions(
    actions: ArrayLike, tokenizer: ActionTokenizer, stats: ActionStats
) -> list[int]:
    """Actions in dataset units ([k, D] or [D]) -> flat token ids, e.g. to write training data."""
    return tokenizer.encode(normalize(actions, stats))


__all__ = [
    "QWEN_ACTION_BASE_ID",
    "ActionStats",
    "ActionTokenizer",
    "DecodedActions",
    "UnknownUnnormKeyError",
    "UnnormKeyError",
    "decode_actions",
    "encode_actions",
    "normalize",
    "resolve_unnorm_key",
    "unnormalize",
]

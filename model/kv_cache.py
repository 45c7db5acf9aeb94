"""A static KV cache in the gpt-fast style: allocated once at its maximum size, written by position.

The decoder owns the position counter. Truncating back to a saved position is O(1): entries beyond the
current position are never attended (the attention mask compares key slots with query positions) and
are overwritten when that position is written again, so nothing needs clearing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    k: torch.Tensor  # [layers, batch, kv_heads, max_len, head_dim]
    v: torch.Tensor
    length: int = 0  # number of valid positions (0..length-1)

    @classmethod
    def allocate(cls, layers: int, kv_heads: int, head_dim: int, max_len: int, *, batch: int = 1,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "KVCache":
        shape = (layers, batch, kv_heads, max_len, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def write(self, layer: int, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k/v [batch, kv_heads, S, head_dim] at slots ``input_pos`` [S] (static-shape friendly)."""
        self.k[layer].index_copy_(2, input_pos, k)
        self.v[layer].index_copy_(2, input_pos, v)

    def truncate(self, length: int) -> None:
        """Forget everything from ``length`` on (O(1), see module docstring)."""
        if not 0 <= length <= self.max_len:
            raise ValueError(f"cannot truncate a KV cache of {self.max_len} slots to {length}")
        self.length = min(self.length, length)

    def check_room(self, end: int) -> None:
        if end > self.max_len:
            raise ValueError(f"sequence needs {end} positions but the KV cache holds {self.max_len}; "
                             "raise max_seq_len")

"""Ordered token groups for training the small sim model: soft targets and smooth initial rows.

The trace coordinates (with whole-number tokens) and the action bins are each 256 ids that stand for
ordered values. Plain cross-entropy treats them as unrelated classes: a coordinate one pixel off costs
as much as one 200 pixels off, so a small model learns the values it sees most (the mode) long before
it learns where in the range the answer lies. Two remedies, both training-only (the checkpoint's
format and the runtime are unchanged):

* ``OrdinalTargets``: a Gaussian over the group's ids around the true one (HL-Gauss, Imani & White
  2018; Farebrother et al. 2024 use it for value regression as classification), so the gradient says
  "higher" or "lower" and neighbouring ids share probability;
* ``smooth_rows_``: the rows of these ids in the input embedding and the output layer start as a
  smooth function of the value (a few Fourier features), so that nearby values start out similar and
  the value can be read from an embedding by a linear map.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


class OrdinalTargets:
    """Soft targets for ids of ordered groups; every other id keeps its one-hot target."""

    def __init__(self, groups: Sequence[Sequence[int]], vocab: int, sigma: float,
                 device: torch.device | str = "cpu") -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.group_of = torch.full((vocab,), -1, dtype=torch.long, device=device)
        self.rank_of = torch.zeros(vocab, dtype=torch.long, device=device)
        self.ids: list[torch.Tensor] = []
        self.soft: list[torch.Tensor] = []
        for g, group in enumerate(groups):
            ids = torch.tensor(list(group), dtype=torch.long, device=device)
            if (self.group_of[ids] >= 0).any() or len(set(group)) != len(group):
                raise ValueError("ordinal groups must not share ids")
            self.group_of[ids] = g
            self.rank_of[ids] = torch.arange(len(ids), device=device)
            self.ids.append(ids)
            k = torch.arange(len(ids), dtype=torch.float32, device=device)
            # row r: the target distribution for rank r (a Gaussian cut to the group's range)
            self.soft.append(torch.softmax(-(k[None] - k[:, None]) ** 2 / (2.0 * sigma ** 2), dim=1))

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits [N, V], target [N] → per-position loss [N]: the usual cross-entropy, except where the
        target is in a group: there, cross-entropy against the Gaussian over that group's ids."""
        logp = F.log_softmax(logits.float(), dim=-1)
        loss = -logp.gather(1, target[:, None])[:, 0]
        group = self.group_of[target]
        for g, ids in enumerate(self.ids):
            at = torch.nonzero(group == g)[:, 0]
            if len(at):
                soft = self.soft[g][self.rank_of[target[at]]]                  # [M, n]
                loss = loss.index_put((at,), -(soft * logp[at][:, ids]).sum(-1))
        return loss


WAVES = (0.5, 1.0, 1.5, 2.5, 4.0, 6.5, 10.5, 17.0)   # periods over the range: not multiples of one another,
#                                                     so no distance (half the range, say) brings them all back in phase


def fourier_features(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, 17] features of the ranks 0..n-1: their position in the range, and cos/sin waves of ``WAVES``
    periods over it (neighbours alike, far values apart)."""
    r = torch.arange(n, dtype=torch.float32, device=device) / max(n - 1, 1)
    waves = [f(math.pi * 2.0 * p * r) for p in WAVES for f in (torch.cos, torch.sin)]
    return torch.stack([2.0 * r - 1.0, *waves], dim=1)


@torch.no_grad()
def smooth_rows_(weight: torch.Tensor, ids: Sequence[int], seed: int, mix: float = 0.7) -> None:
    """Rows ``ids`` of ``weight`` (in value order) become ``mix`` of a random linear map of their Fourier
    features plus ``1 - mix`` of what they were, at the rows' former RMS."""
    ids_t = torch.tensor(list(ids), dtype=torch.long, device=weight.device)
    feats = fourier_features(len(ids_t), weight.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    proj = torch.randn(feats.shape[1], weight.shape[1], generator=gen).to(weight.device)
    smooth = feats @ proj
    old = weight[ids_t].float()
    rms = old.pow(2).mean().sqrt()
    smooth = smooth * (rms / smooth.pow(2).mean().sqrt())
    weight[ids_t] = (mix * smooth + (1.0 - mix) * old).to(weight.dtype)

"""Soft targets over ordered ids, and their smooth initial rows."""
import pytest
import torch
import torch.nn.functional as F

from app.sim.ordinal import OrdinalTargets, fourier_features, smooth_rows_

VOCAB = 40
GROUP = tuple(range(30, 10, -1))      # 20 ordered ids, in value order (descending ids, as the action bins are)


def peaked(at: int, n: int = 4) -> torch.Tensor:
    logits = torch.zeros(n, VOCAB)
    logits[:, at] = 8.0
    return logits


def test_ids_outside_the_groups_keep_the_usual_cross_entropy():
    ordinal = OrdinalTargets([GROUP], VOCAB, sigma=1.5)
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 5, 9, 31, 35, 39])
    torch.testing.assert_close(ordinal.cross_entropy(logits, target),
                               F.cross_entropy(logits, target, reduction="none"))


def test_a_near_miss_costs_less_than_a_far_one():
    """One-hot cross-entropy charges a neighbour and a far value the same; the soft target does not."""
    ordinal = OrdinalTargets([GROUP], VOCAB, sigma=1.5)
    true = GROUP[10]
    target = torch.full((4,), true)
    exact, near, far = (ordinal.cross_entropy(peaked(t), target)[0] for t in (true, GROUP[11], GROUP[18]))
    assert exact < near < far
    one_hot_near, one_hot_far = (F.cross_entropy(peaked(t), target)[None] for t in (GROUP[11], GROUP[18]))
    torch.testing.assert_close(one_hot_near, one_hot_far)


def test_the_soft_target_is_a_gaussian_over_the_group_cut_at_its_ends():
    ordinal = OrdinalTargets([GROUP], VOCAB, sigma=2.0)
    soft = ordinal.soft[0]
    torch.testing.assert_close(soft.sum(1), torch.ones(len(GROUP)))
    assert soft[10].argmax() == 10 and torch.allclose(soft[10, 8], soft[10, 12])
    assert soft[0, 0] > soft[10, 10]                         # at the end of the range the mass is cut, not wrapped
    # the best logits for the soft loss reproduce the Gaussian: its minimum is the target's entropy
    logits = torch.full((1, VOCAB), -1e4)
    logits[0, list(GROUP)] = soft[10].log()
    loss = ordinal.cross_entropy(logits, torch.tensor([GROUP[10]]))[0]
    entropy = -(soft[10] * soft[10].log()).sum()
    torch.testing.assert_close(loss, entropy, atol=1e-4, rtol=1e-4)


def test_groups_must_not_overlap_and_sigma_must_be_positive():
    with pytest.raises(ValueError, match="share"):
        OrdinalTargets([GROUP, (11, 12)], VOCAB, sigma=1.0)
    with pytest.raises(ValueError, match="sigma"):
        OrdinalTargets([GROUP], VOCAB, sigma=0.0)


def test_smooth_rows_make_neighbours_alike_and_leave_other_rows_alone():
    group = list(range(300, 44, -1))                 # 256 values, as the coordinates and the action bins
    weight = torch.randn(320, 128, generator=torch.Generator().manual_seed(1)) * 0.02
    before = weight.clone()
    smooth_rows_(weight, group, seed=3)
    others = [i for i in range(320) if i not in group]
    assert torch.equal(weight[others], before[others])

    def similarity(w, gap):
        rows = F.normalize(w[group], dim=1)
        return float((rows[:-gap] * rows[gap:]).sum(1).mean())

    assert similarity(weight, 1) > 0.6
    assert all(abs(similarity(weight, gap)) < 0.4 for gap in (64, 128, 192))   # far values: unrelated
    assert abs(similarity(before, 1)) < 0.2                              # random rows: neighbours unrelated
    ratio = weight[group].pow(2).mean().sqrt() / before[group].pow(2).mean().sqrt()   # about their former scale
    assert 0.5 < ratio < 1.2


def test_fourier_features_start_with_the_position_in_the_range():
    f = fourier_features(5)
    torch.testing.assert_close(f[:, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert f.shape == (5, 17)

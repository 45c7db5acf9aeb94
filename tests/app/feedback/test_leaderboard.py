"""Bradley-Terry leaderboard: recovers known strengths with honest intervals; degenerate inputs are fine."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.feedback.leaderboard import ELO_PER_NAT, fit_bradley_terry, leaderboard
from app.feedback.records import Outcome

from .factories import comparison

TRUE = {"checkpoint:good": 1250.0, "operator_edit": 1080.0, "model": 950.0, "checkpoint:bad": 720.0}


def synthetic(n: int, seed: int, tie_band: float = 0.0) -> list[Outcome]:
    """Answers drawn from the Bradley-Terry model with TRUE strengths (both orders on screen)."""
    rng = np.random.default_rng(seed)
    labels = list(TRUE)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(labels), 2, replace=False)
        p = 1.0 / (1.0 + math.exp(-(TRUE[labels[i]] - TRUE[labels[j]]) / ELO_PER_NAT))
        u = rng.random()
        answer = "tie" if abs(u - p) < tie_band else ("A" if u < p else "B")
        out.append(Outcome(labels[i], labels[j], answer, "two_checkpoints"))
    return out


def centred(d: dict[str, float]) -> dict[str, float]:
    mean = sum(d.values()) / len(d)
    return {k: 1000.0 + v - mean for k, v in d.items()}


def test_recovers_order_and_intervals_cover_the_truth():
    board = leaderboard(synthetic(800, seed=1))
    truth = centred(TRUE)
    assert [r.label for r in board.rows] == sorted(TRUE, key=TRUE.get, reverse=True)
    for r in board.rows:
        assert r.ci_low < r.score < r.ci_high
        assert r.ci_low <= truth[r.label] <= r.ci_high, (r, truth[r.label])
        assert r.ci_high - r.ci_low < 150                       # 800 answers: tight enough to be useful
        assert abs(r.score - truth[r.label]) < 60
    assert sum(r.wins for r in board.rows) == sum(r.losses for r in board.rows) == 800
    assert board.n_comparisons == 800 and abs(np.mean([r.score for r in board.rows]) - 1000) < 1e-6


def test_interval_coverage_over_repeated_experiments():
    """Across independent data sets, the 95% intervals hold the true score most of the time."""
    truth = centred(TRUE)
    hits = total = 0
    for seed in range(12):
        board = leaderboard(synthetic(300, seed=100 + seed), bootstrap=200, seed=seed)
        for r in board.rows:
            hits += r.ci_low <= truth[r.label] <= r.ci_high
            total += 1
    assert hits / total >= 0.85, f"coverage {hits}/{total}"


def test_a_wrong_model_would_fail():
    """Swapping the answers ranks the players the other way round (the test above can fail)."""
    flipped = [Outcome(o.a, o.b, {"A": "B", "B": "A"}[o.answer]) for o in synthetic(400, seed=2)]
    board = leaderboard(flipped, bootstrap=0)
    assert [r.label for r in board.rows] == sorted(TRUE, key=TRUE.get)


def test_reference_label_sits_at_1000():
    board = leaderboard(synthetic(400, seed=3), reference="model", bootstrap=100)
    model = board.row("model")
    assert model.score == pytest.approx(1000.0) and model.ci_low == pytest.approx(1000.0)
    assert board.row("checkpoint:good").score > 1000 > board.row("checkpoint:bad").score
    assert "relative to model" in board.table()
    with pytest.raises(ValueError, match="reference 'nobody'"):
        leaderboard(synthetic(10, seed=3), reference="nobody")


def test_ties_both_bad_and_same_label():
    outs = [Outcome("x", "y", "A")] * 3 + [Outcome("x", "y", "B")] * 3 + [Outcome("x", "y", "tie")] * 4 \
        + [Outcome("x", "y", "both_bad")] * 5 + [Outcome("x", "x", "A")] * 2 + [Outcome("z", "w", "both_bad")]
    board = leaderboard(outs, bootstrap=50)
    x, y = board.row("x"), board.row("y")
    assert (x.wins, x.losses, x.ties, x.both_bad, x.n) == (3, 3, 4, 5, 10)
    assert (y.wins, y.losses, y.ties, y.both_bad, y.n) == (3, 3, 4, 5, 10)
    assert x.score == pytest.approx(1000.0) and y.score == pytest.approx(1000.0) and x.win_rate == 0.5
    assert board.n_comparisons == 10 and board.n_both_bad == 6 and board.n_same_label == 2
    assert board.unranked == {"z": 1, "w": 1}
    # ties count half: 2 wins + 2 ties beat 0 wins + 2 ties
    board = leaderboard([Outcome("p", "q", "A")] * 2 + [Outcome("p", "q", "tie")] * 2, bootstrap=0)
    assert board.rows[0].label == "p" and board.p_beats("p", "q") > 0.5


@pytest.mark.parametrize("outs", [
    [],
    [Outcome("solo", "solo", "A")],
    [Outcome("a", "b", "both_bad")] * 3,
    [Outcome("a", "b", "tie")] * 7,
    [Outcome("a", "b", "A")] * 50,                               # undefeated: finite thanks to the prior
    [Outcome("a", "b", "A"), Outcome("c", "d", "B")],            # two disconnected pairs
])
def test_degenerate_inputs_do_not_crash(outs):
    board = leaderboard(outs, bootstrap=30)
    for r in board.rows:
        assert all(math.isfinite(v) for v in (r.score, r.ci_low, r.ci_high))
        assert r.ci_low <= r.score + 1e-9 and r.score <= r.ci_high + 1e-9
    assert isinstance(board.table(), str)
    if outs and all(o.answer == "tie" for o in outs):
        assert [r.score for r in board.rows] == pytest.approx([1000.0, 1000.0])
    if len(outs) == 50:
        a, b = board.row("a"), board.row("b")
        assert a.score > b.score and a.score - b.score < 1500


def test_same_data_same_table_and_comparisons_accepted():
    comps = [comparison(i, answer=("A", "B", "A", "tie")[i % 4]) for i in range(12)]
    b1 = leaderboard(comps, bootstrap=100, seed=5)
    b2 = leaderboard([Outcome.of(c) for c in comps], bootstrap=100, seed=5)
    assert b1.rows == b2.rows and b1.rows[0].label == "model"
    assert leaderboard(comps, kind="two_modes").rows == []
    with pytest.raises(TypeError):
        leaderboard([("a", "b", "A")])


def test_fit_matches_the_closed_form_for_two_players():
    """Two players, w wins of n, one virtual drawn game each against the average: the MAP has no closed
    form, but its gradient must vanish."""
    wins = np.array([[0.0, 7.0], [3.0, 0.0]])
    theta = fit_bradley_terry(wins, prior_games=1.0)
    p = 1.0 / (1.0 + np.exp(-(theta[0] - theta[1])))
    grad0 = 7.0 - 10.0 * p + 1.0 * (0.5 - 1.0 / (1.0 + np.exp(-theta[0])))
    assert abs(grad0) < 1e-8 and theta[0] > 0 > theta[1]
    assert fit_bradley_terry(wins, prior_games=0.0) == pytest.approx([math.log(7 / 3) / 2, -math.log(7 / 3) / 2])

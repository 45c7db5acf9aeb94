"""Bradley-Terry scores with bootstrap confidence intervals over whatever the comparisons compared.

The players are the candidates' labels (``model``, ``operator_edit``, ``steer_text``, ``checkpoint:NAME``…).
Model: P(i preferred over j) = σ(θ_i − θ_j). Fit: the maximum a posteriori θ by Newton's method, with a
weak prior written as ``prior_games`` virtual drawn games of every player against a fixed average player
(θ = 0): it keeps an undefeated player (or a comparison graph in several pieces) finite, and it is
negligible once a player has a few dozen answers.

Answers: ``A``/``B`` are a win and a loss; ``tie`` is half a win for each; ``both_bad`` says nothing
about which is better, so it is left out of the fit and counted separately (``both_bad`` per player). A
comparison of a label with itself (two samples of one model labelled alike) is left out too.

Scores are on the Elo scale: 400·log10 of the odds, so +400 means 10:1; they are centred on 1000 for the
mean player, or put the ``reference`` player at 1000. The 95% intervals are percentile bootstrap intervals
over the comparisons (resampled with replacement, fixed seed: the same data gives the same table).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .records import Comparison, Outcome

ELO_PER_NAT = 400.0 / math.log(10.0)
BASE_SCORE = 1000.0


@dataclass(frozen=True)
class Row:
    label: str
    score: float               # Elo scale
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    both_bad: int
    n: int                     # answers in the fit: wins + losses + ties

    @property
    def win_rate(self) -> float:
        """Wins (ties as half) over answers in the fit; NaN without any."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else float("nan")


@dataclass
class Leaderboard:
    rows: list[Row]                               # best first
    n_comparisons: int                            # answers in the fit
    n_both_bad: int                               # left out: neither was good
    n_same_label: int                             # left out: a label against itself
    reference: str | None
    level: float
    bootstrap: int
    unranked: dict[str, int] = field(default_factory=dict)   # label → both-bad answers, for labels with no fit data

    def row(self, label: str) -> Row:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)

    def p_beats(self, a: str, b: str) -> float:
        """The fitted probability that ``a`` is preferred over ``b``."""
        d = (self.row(a).score - self.row(b).score) / ELO_PER_NAT
        return 1.0 / (1.0 + math.exp(-d))

    def table(self) -> str:
        """A plain-text table (the CLI prints it)."""
        if not self.rows:
            return f"no comparisons to rank ({self.n_both_bad} both bad, {self.n_same_label} same label)"
        pct = f"{round(self.level * 100):d}% CI"
        width = max(5, *(len(r.label) for r in self.rows))
        lines = [f"{'rank':>4}  {'label':<{width}}  {'score':>7}  {pct:>17}  {'wins':>5} {'losses':>6} "
                 f"{'ties':>5} {'both_bad':>8} {'n':>5}"]
        for i, r in enumerate(self.rows, 1):
            ci = f"[{r.ci_low:7.1f}, {r.ci_high:7.1f}]"
            lines.append(f"{i:>4}  {r.label:<{width}}  {r.score:7.1f}  {ci:>17}  {r.wins:>5} {r.losses:>6} "
                         f"{r.ties:>5} {r.both_bad:>8} {r.n:>5}")
        lines.append(f"{self.n_comparisons} answers ranked; left out: {self.n_both_bad} both bad, "
                     f"{self.n_same_label} same label" + (f"; scores relative to {self.reference} = 1000"
                                                          if self.reference else "; mean = 1000"))
        return "\n".join(lines)


def _outcomes(items: Iterable[Outcome | Comparison], kind: str | None) -> list[Outcome]:
    out = []
    for it in items:
        o = Outcome.of(it) if isinstance(it, Comparison) else it
        if not isinstance(o, Outcome):
            raise TypeError(f"expected Outcome or Comparison, got {type(it).__name__}")
        if kind is None or o.kind == kind:
            out.append(o)
    return out


def fit_bradley_terry(wins: np.ndarray, prior_games: float = 1.0, tol: float = 1e-10, max_iter: int = 200
                      ) -> np.ndarray:
    """MAP strengths θ (natural log odds, shape [..., k]) from win counts ``wins[..., i, j]`` (i over j,
    ties already split in halves). Batched over leading axes (the bootstrap replicates)."""
    wins = np.asarray(wins, dtype=np.float64)
    if prior_games < 0:
        raise ValueError("prior_games must be >= 0")
    k = wins.shape[-1]
    games = wins + np.swapaxes(wins, -1, -2)
    won = wins.sum(-1)
    theta = np.zeros(wins.shape[:-1])
    eye = np.eye(k)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(theta[..., :, None] - theta[..., None, :])))   # p[i, j] = P(i beats j)
        p0 = 1.0 / (1.0 + np.exp(-theta))                                         # against the anchor
        grad = won - (games * p).sum(-1) + prior_games * (0.5 - p0)
        c = games * p * (1.0 - p)
        neg_h = eye * (c.sum(-1) + prior_games * p0 * (1.0 - p0))[..., None] - c  # −Hessian, pos. definite
        if prior_games == 0:
            # θ is then defined up to a constant: the gradient sums to zero, and adding J/k (J = all ones)
            # fixes the mean at 0 without changing the step (needs a connected comparison graph)
            neg_h = neg_h + 1.0 / k
        step = np.linalg.solve(neg_h, grad[..., None])[..., 0]
        step = np.clip(step, -2.0, 2.0)            # a trust region: Newton may overshoot on lopsided data
        theta = theta + step
        if np.max(np.abs(step)) < tol:
            break
    return theta


def leaderboard(items: Iterable[Outcome | Comparison], *, kind: str | None = None, reference: str | None = None,
                bootstrap: int = 1000, level: float = 0.95, seed: int = 0, prior_games: float = 1.0
                ) -> Leaderboard:
    """Rank the labels of ``items`` (``Outcome``s, e.g. ``PreferenceStore.outcomes()``, or ``Comparison``s).

    ``kind`` keeps one comparison kind only. ``reference`` puts that label at 1000 (default: the mean).
    ``bootstrap`` replicates (0: no intervals, they equal the score).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if bootstrap < 0:
        raise ValueError("bootstrap must be >= 0")
    outcomes = _outcomes(items, kind)
    counted = [o for o in outcomes if o.answer != "both_bad" and o.a != o.b]
    n_both_bad = sum(o.answer == "both_bad" for o in outcomes)
    n_same = sum(o.a == o.b and o.answer != "both_bad" for o in outcomes)
    labels = sorted({o.a for o in counted} | {o.b for o in counted})
    index = {lab: i for i, lab in enumerate(labels)}
    if reference is not None and reference not in index:
        raise ValueError(f"reference {reference!r} has no ranked comparisons (labels: {', '.join(labels) or 'none'})")
    stats = {lab: {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0} for lab in labels}
    unranked: dict[str, int] = {}
    for o in outcomes:
        if o.answer == "both_bad":
            for lab in {o.a, o.b}:
                if lab in stats:
                    stats[lab]["both_bad"] += 1
                else:
                    unranked[lab] = unranked.get(lab, 0) + 1
        elif o.a != o.b:
            if o.answer == "tie":
                stats[o.a]["ties"] += 1
                stats[o.b]["ties"] += 1
            else:
                winner, loser = (o.a, o.b) if o.answer == "A" else (o.b, o.a)
                stats[winner]["wins"] += 1
                stats[loser]["losses"] += 1
    if not labels:
        return Leaderboard([], 0, n_both_bad, n_same, reference, level, bootstrap, unranked)

    k, m = len(labels), len(counted)
    # One row per answer: (i, j, credit to i); a tie gives half to each side.
    ai = np.array([index[o.a] for o in counted])
    bi = np.array([index[o.b] for o in counted])
    credit = np.array([{"A": 1.0, "B": 0.0, "tie": 0.5}[o.answer] for o in counted])

    def win_matrix(weights: np.ndarray) -> np.ndarray:       # weights: [R, m] → wins [R, k, k]
        r = weights.shape[0]
        w = np.zeros((r, k * k))
        for src, dst, cr in ((ai, bi, credit), (bi, ai, 1.0 - credit)):
            flat = src * k + dst
            for rep in range(r):
                w[rep] += np.bincount(flat, weights=weights[rep] * cr, minlength=k * k)
        return w.reshape(r, k, k)

    def to_scores(theta: np.ndarray) -> np.ndarray:
        centre = theta[..., index[reference]] if reference is not None else theta.mean(-1)
        return BASE_SCORE + ELO_PER_NAT * (theta - centre[..., None])

    score = to_scores(fit_bradley_terry(win_matrix(np.ones((1, m))), prior_games))[0]
    if bootstrap:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=bootstrap).astype(np.float64)
        boot = to_scores(fit_bradley_terry(win_matrix(weights), prior_games))
        alpha = (1.0 - level) / 2.0
        lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    else:
        lo = hi = score
    rows = [Row(label=lab, score=float(score[i]), ci_low=float(lo[i]), ci_high=float(hi[i]), n=s["wins"]
                + s["losses"] + s["ties"], **s) for lab, i, s in ((lab, index[lab], stats[lab]) for lab in labels)]
    rows.sort(key=lambda r: (-r.score, r.label))
    return Leaderboard(rows, m, n_both_bad, n_same, reference, level, bootstrap, unranked)


__all__ = ["ELO_PER_NAT", "Leaderboard", "Row", "fit_bradley_terry", "leaderboard"]

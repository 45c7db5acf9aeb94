"""Feedback records: validation with messages that name the field, equality, construction from the session."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from app.feedback import records
from app.feedback.records import Candidate, Comparison, Outcome, RecordError

from .factories import candidate, comparison, image, rating


def test_record_error_is_a_value_error():
    assert issubclass(RecordError, ValueError)


def test_constants_match_the_model():
    from model.grammar import MAX_COORD
    from model.reasoning import MODES
    from model.tokenizer import NUM_DEPTH_CODES
    assert records.MODES == MODES
    assert records.MAX_COORD == MAX_COORD == 255
    assert records.NUM_DEPTH_CODES == NUM_DEPTH_CODES


def test_candidate_normalizes_types():
    c = Candidate(label="model", model_id="m", mode="reason", trace=np.array([[1, 2], [3.0, 4.0]]),
                  action=np.arange(7, dtype=np.float32), depth_codes=np.array([0, 127]))
    assert c.trace == ((1, 2), (3, 4)) and all(type(v) is int for p in c.trace for v in p)
    assert c.action == tuple(float(i) for i in range(7)) and all(type(v) is float for v in c.action)
    assert c.depth_codes == (0, 127)
    assert c == Candidate(label="model", model_id="m", mode="reason", trace=[(1, 2), (3, 4)], action=list(range(7)),
                          depth_codes=[0, 127])
    assert hash(c) == hash(Candidate(label="model", model_id="m", mode="reason", trace=[(1, 2), (3, 4)],
                                     action=list(range(7)), depth_codes=[0, 127]))


@pytest.mark.parametrize("kw, match", [
    ({"trace": [(i, i) for i in range(6)]}, "at most 5"),
    ({"trace": []}, "no points"),
    ({"trace": [(256, 0)]}, "outside the model space"),
    ({"trace": [(0, -1)]}, "outside the model space"),
    ({"trace": [(1.5, 2)]}, "must be an integer"),
    ({"trace": [(math.nan, 2)]}, "must be an integer"),
    ({"trace": [(1, 2, 3)]}, "3 coordinates"),
    ({"action": [0.0, math.nan, 0.0]}, r"action\[1\] is not finite"),
    ({"action": [0.0, math.inf]}, "not finite"),
    ({"action": []}, "non-empty"),
    ({"action": [[0.0, 1.0]]}, "1-D"),
    ({"action": ["a", "b"]}, "list of numbers"),
    ({"action_normalized": [0.0] * 6}, "action_normalized has 6 values"),
    ({"sent": [math.nan]}, "sent"),
    ({"mode": "fast"}, "mode 'fast'"),
    ({"label": " "}, "label is empty"),
    ({"model_id": ""}, "model_id is empty"),
    ({"depth_codes": [0, 128]}, "depth code 128"),
])
def test_candidate_rejects(kw, match):
    with pytest.raises(RecordError, match=match):
        candidate(**kw)


@pytest.mark.parametrize("kw, match", [
    ({"answer": "C"}, "answer 'C' is not one of A, B, tie, both_bad"),
    ({"answer": "a"}, "answer 'a'"),
    ({"kind": "three_way"}, "kind 'three_way'"),
    ({"img": np.zeros((4, 4, 3), np.float32)}, "uint8"),
    ({"img": np.zeros((4, 4), np.uint8)}, "HxWx3"),
    ({"img": np.zeros((0, 4, 3), np.uint8)}, "empty"),
    ({"instruction": "  "}, "instruction is empty"),
    ({"operator": ""}, "operator is empty"),
    ({"model_id": ""}, "model_id is empty"),
    ({"unnorm_key": ""}, "unnorm_key is empty"),
    ({"created_at": math.nan}, "created_at"),
    ({"episode_index": -1}, "episode_index must be >= 0"),
    ({"frame_index": 1.5}, "frame_index must be an integer"),
    ({"comment": None}, "comment must be a string"),
])
def test_comparison_rejects(kw, match):
    with pytest.raises(RecordError, match=match):
        comparison(**kw)


def test_comparison_needs_candidates():
    good = comparison()
    with pytest.raises(RecordError, match="candidate B must be a Candidate"):
        Comparison(image=good.image, instruction="x", model_id="m", unnorm_key=None, kind="two_modes", a=good.a,
                   b={"label": "model"}, answer="A", operator="o")


@pytest.mark.parametrize("kw, match", [
    ({"depth_score": 0}, "depth score must be 1..5, got 0"),
    ({"trace_score": 6}, "trace score must be 1..5"),
    ({"action_score": 2.5}, "action score must be an integer 1..5"),
    ({"action_score": True}, "action score must be an integer"),
    ({"depth_score": None, "trace_score": None, "action_score": None, "note": " "}, "at least one score"),
    ({"candidate": None}, "must be a Candidate"),
])
def test_rating_rejects(kw, match):
    with pytest.raises(RecordError, match=match):
        rating(**kw)


def test_rating_may_leave_scores_out():
    r = rating(depth_score=None, trace_score=None, action_score=None, note="depth not shown")
    assert (r.depth_score, r.trace_score, r.action_score) == (None, None, None)
    assert rating(depth_score=np.int64(3)).depth_score == 3
    assert r.model_id == r.candidate.model_id and r.mode == "reason"


def test_comparison_equality_compares_content_not_id():
    c1, c2 = comparison(1), comparison(1)
    c2.id = 17
    assert c1 == c2
    c3 = comparison(1)
    c3.image = c3.image.copy()
    c3.image[0, 0, 0] ^= 1
    assert c1 != c3
    assert c1 != comparison(1, comment="x")
    assert c1 != comparison(1, img=image(1, 12, 16))


def test_chosen_and_rejected():
    c = comparison(answer="B")
    assert c.chosen is c.b and c.rejected is c.a
    c = comparison(answer="A")
    assert c.chosen is c.a and c.rejected is c.b
    for answer in ("tie", "both_bad"):
        c = comparison(answer=answer)
        assert c.chosen is None and c.rejected is None
    assert Outcome.of(comparison(answer="tie", a="x", b="y", kind="two_modes")) == Outcome("x", "y", "tie", "two_modes")
    with pytest.raises(RecordError):
        Outcome("x", "y", "maybe")


def test_candidate_from_reasoning_takes_the_first_action_of_a_chunk():
    actions = np.arange(8 * 7, dtype=np.float64).reshape(8, 7)
    r = SimpleNamespace(mode="steer_text", trace=[(1, 2), (3, 4)], actions=actions, actions_normalized=actions / 100,
                        depth_codes=list(range(100)))
    c = Candidate.from_reasoning(r, label="steer_text", model_id="m")
    assert c.action == tuple(actions[0]) and c.action_normalized == tuple(actions[0] / 100)
    assert c.trace == ((1, 2), (3, 4)) and c.depth_codes == tuple(range(100)) and c.mode == "steer_text"
    # steer_visual answers carry no trace and no depth: the operator's trace is passed in
    r = SimpleNamespace(mode="steer_visual", trace=[], actions=actions[:1], actions_normalized=actions[:1] / 100,
                        depth_codes=[])
    c = Candidate.from_reasoning(r, label="steer_visual", model_id="m", trace=[(9, 9)], sent=[0.0] * 7)
    assert c.trace == ((9, 9),) and c.depth_codes is None and c.sent == (0.0,) * 7


def test_candidate_from_a_session_action_step():
    from app.session import ActionStep
    step = ActionStep(index=3, mode="steer_visual", trace=[(10, 20), (30, 40)],
                      action_normalized=np.linspace(-1, 1, 7), action=np.linspace(-0.1, 0.1, 7),
                      unnorm_key="k", status="sent", sent=np.full(7, 0.01))
    c = Candidate.from_step(step, label="operator_edit", model_id="m")
    assert c.trace == ((10, 20), (30, 40)) and c.mode == "steer_visual"
    assert c.action == tuple(np.linspace(-0.1, 0.1, 7)) and c.sent == (0.01,) * 7
    assert c.to_dict()["trace"] == [[10, 20], [30, 40]]

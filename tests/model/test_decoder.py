import numpy as np
import pytest
import torch

from model.decoder import DecoderConfig, MolmoActDecoder, SamplingConfig, draw_trace
from model.grammar import AnswerFormat, TraceError, parse_answer_ids, parse_answer_text
from model.reasoning import Observation


@pytest.fixture(scope="module")
def dec(tiny):
    return MolmoActDecoder(tiny)


def image(seed, h=240, w=320):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def check_reasoning(dec, r):
    assert len(r.depth_codes) == 100 and all(0 <= c < 128 for c in r.depth_codes)
    assert 1 <= len(r.trace) <= 5 and all(0 <= v <= 255 for p in r.trace for v in p)
    assert r.actions.shape == (1, 7) and np.isfinite(r.actions).all()
    assert np.all(np.abs(r.actions_normalized) <= 1)
    parsed = parse_answer_ids(dec.grammar, r.token_ids)
    assert (parsed.depth_codes, parsed.trace, parsed.action_token_ids) == (r.depth_codes, r.trace, r.action_token_ids)
    text = parse_answer_text(r.text, dec.ckpt.tokenizer)
    assert (text.depth_codes, text.trace, text.action_token_ids) == (r.depth_codes, r.trace, [r.action_token_ids])


@pytest.mark.parametrize("seed", range(4))
def test_reason_is_parseable_for_many_images_and_samples(dec, seed):
    obs = Observation([image(seed, 200 + 40 * seed, 300)], "pick up the red cube")
    r = dec.reason(obs) if seed % 2 == 0 else dec.reason(obs, SamplingConfig(temperature=1.5, seed=seed))
    assert r.mode == "reason"
    check_reasoning(dec, r)
    assert r.depth_map is not None and r.depth_map.normalized.shape == (320, 320)
    assert {"prefill", "depth", "trace", "action", "decode", "total"} <= set(r.timings_ms)
    # jump-forward: one model call per choice, far fewer than answer tokens
    assert r.decode_steps < len(r.token_ids) - 40


def test_any_weights_still_parse(tiny_dir, tmp_path):
    """Constrained decoding yields a parseable answer even from broken (NaN) weights."""
    from model.checkpoint import load_checkpoint
    ck = load_checkpoint(tiny_dir)
    with torch.no_grad():
        ck.model.lm_head.weight.fill_(float("nan"))
    d = MolmoActDecoder(ck)
    check_reasoning(d, d.reason(Observation([image(9)], "stack the blocks")))


def test_two_cameras(dec):
    r = dec.reason(Observation([image(1), image(2, 256, 256)], "put the red cube in the bowl"))
    check_reasoning(dec, r)
    assert r.prompt_tokens > 2 * 424


def test_steer_text_with_reasons_trace_reproduces_reasons_action(dec):
    r = dec.reason(Observation([image(5)], "pick up the red cube"))
    s = dec.steer_text(r.trace)
    assert s.mode == "steer_text"
    assert s.token_ids == r.token_ids                 # same prefix, same forced trace, same action tokens
    assert s.action_token_ids == r.action_token_ids
    np.testing.assert_array_equal(s.actions, r.actions)
    assert s.depth_codes == r.depth_codes and s.depth_map is r.depth_map


def test_steer_text_with_other_trace_changes_forced_tokens_and_parses(dec):
    r = dec.reason(Observation([image(6)], "pick up the red cube"))
    edited = [(10, 200), (128, 128), (250, 3)]
    if edited == r.trace:
        edited = [(11, 200)]
    s = dec.steer_text(edited)
    assert s.trace == edited and s.token_ids != r.token_ids
    parsed = parse_answer_ids(dec.grammar, s.token_ids)
    assert parsed.trace == edited and parsed.depth_codes == r.depth_codes
    assert parsed.action_token_ids == s.action_token_ids
    # no image encoding, no prompt prefill: a handful of model calls only
    assert s.decode_steps <= 8


def test_cache_rollback_leaves_no_stale_entries(tiny, dec):
    obs = Observation([image(7)], "push the blue block to the left")
    dec.reason(obs)
    a = dec.steer_text([(200, 10)])
    dec.steer_text([(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)])  # a longer trace writes further slots
    b = dec.steer_text([(200, 10)])
    fresh = MolmoActDecoder(tiny)
    fresh.reason(obs)
    c = fresh.steer_text([(200, 10)])
    assert a.token_ids == b.token_ids == c.token_ids
    np.testing.assert_array_equal(a.actions, c.actions)


def test_steer_visual_draws_and_keeps_the_reasoning_cache(dec):
    obs = Observation([image(8)], "pick up the red cube")
    r = dec.reason(obs)
    v = dec.steer_visual(obs, [(0, 0), (255, 255)])
    assert v.mode == "steer_visual" and v.depth_codes == [] and v.trace == [(0, 0), (255, 255)]
    text = dec.ckpt.tokenizer.decode(v.token_ids)
    assert text.startswith(" Based on the image and the annotated trajectory of the end effector")
    assert v.actions.shape == (1, 7)
    # steer_visual prefills its own scratch cache: steer_text still continues reason()'s prefix
    assert dec.steer_text(r.trace).token_ids == r.token_ids


def test_draw_trace_is_cyan_antialiased_and_scaled():
    img = np.zeros((100, 200, 3), np.uint8)
    out = draw_trace(img, [(0, 0), (255, 0)], thickness=3)
    assert img.sum() == 0                                  # the input is not modified
    assert tuple(out[1, 100]) == (0, 255, 255)             # along the top edge, x 0..199
    assert tuple(out[1, 199]) == (0, 255, 255)
    assert out[50].sum() == 0
    soft = out[:, :, 1][(out[:, :, 1] > 0) & (out[:, :, 1] < 255)]
    assert soft.size > 0                                   # anti-aliased edge pixels
    single = draw_trace(img, [(128, 128)])
    assert tuple(single[50, 100]) == (0, 255, 255)


def test_sampling_gives_alternatives_and_is_seeded(dec):
    obs = Observation([image(3)], "pick up the red cube")
    a = dec.reason(obs, SamplingConfig(temperature=2.0, seed=1))
    b = dec.reason(obs, SamplingConfig(temperature=2.0, seed=1))
    c = dec.reason(obs, SamplingConfig(temperature=2.0, seed=2))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    greedy1, greedy2 = dec.reason(obs), dec.reason(obs)
    assert greedy1.token_ids == greedy2.token_ids
    with pytest.raises(ValueError):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)
    nucleus = dec.reason(obs, SamplingConfig(temperature=1.0, top_p=0.5, seed=3))
    check_reasoning(dec, nucleus)


@pytest.mark.parametrize("trace, err", [
    ([], "no points"),
    ([(1, 1)] * 6, "6 points"),
    ([(float("nan"), 3)], "not finite"),
])
def test_bad_edited_traces_are_rejected(dec, trace, err):
    dec.reason(Observation([image(4)], "pick up the red cube"))
    with pytest.raises(TraceError, match=err):
        dec.steer_text(trace)
    with pytest.raises(TraceError, match=err):
        dec.steer_visual(Observation([image(4)], "x"), trace)


def test_out_of_image_points_are_clamped(dec):
    dec.reason(Observation([image(4)], "pick up the red cube"))
    s = dec.steer_text([(-40, 300), (1e6, 5.4)])
    assert s.trace == [(0, 255), (255, 5)]


def test_steer_text_before_reason_and_unknown_unnorm_key(tiny):
    d = MolmoActDecoder(tiny)
    with pytest.raises(RuntimeError, match="reason"):
        d.steer_text([(1, 1)])
    with pytest.raises(KeyError, match="bridge_orig"):
        d.reason(Observation([image(0)], "x", unnorm_key="bridge_orig"))


def test_chunked_checkpoint_format(tiny):
    d = MolmoActDecoder(tiny, DecoderConfig(answer=AnswerFormat(action_horizon=8)))
    r = d.reason(Observation([image(0)], "pick up the red cube"))
    assert r.actions.shape == (8, 7) and r.action.shape == (7,)
    assert parse_answer_ids(d.grammar, r.token_ids).action_token_ids == r.action_token_ids
    assert d.steer_text(r.trace).token_ids == r.token_ids


def test_observation_validation():
    with pytest.raises(ValueError, match="at least one image"):
        Observation([], "x")
    with pytest.raises(ValueError, match="uint8"):
        Observation([np.zeros((4, 4, 3), np.float32)], "x")
    with pytest.raises(ValueError, match="empty"):
        Observation([np.zeros((4, 4, 3), np.uint8)], " ")

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


def test_extreme_weights_still_parse_and_nan_weights_refuse(tiny_dir):
    """Constrained decoding parses whatever finite weights say; NaN logits give a clear error, no action."""
    from model.checkpoint import load_checkpoint
    from model.decoder import NonFiniteLogitsError
    ck = load_checkpoint(tiny_dir)
    with torch.no_grad():
        ck.model.lm_head.weight.mul_(1e3)
    d = MolmoActDecoder(ck)
    check_reasoning(d, d.reason(Observation([image(9)], "stack the blocks")))
    with torch.no_grad():
        ck.model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLogitsError, match="NaN"):
        d.reason(Observation([image(9)], "stack the blocks"))
    with pytest.raises(RuntimeError, match="reason"):
        d.steer_text([(1, 1)])          # the failed reason() left nothing to continue


def choices_in(program, ids):
    """Replay a grammar program over finished ids; (index, allowed, segment) of every choice."""
    from model.grammar import Forced
    out, pos = [], 0
    step = next(program)
    try:
        while True:
            if isinstance(step, Forced):
                pos += len(step.ids)
                step = program.send(None)
            else:
                out.append((pos, step.allowed, step.segment))
                pos += 1
                step = program.send(ids[pos - 1])
    except StopIteration:
        return out


def assert_choices_match_full_forward(dec, images, prompt, answer, program, segments):
    """Every model choice equals the argmax, over the allowed ids, of an uncached full forward of
    prompt + answer: catches wrong cache positions, stale entries and wrong rollback points."""
    inputs = dec.ckpt.processor(images, prompt)
    ids = torch.cat([inputs.input_ids, torch.tensor([answer])], 1)
    m = dec.model
    with torch.inference_mode():
        logits = m.logits(m(m.embed(ids, inputs.crops, inputs.pooled_patches_idx)))[0]
    n = inputs.length
    checked = 0
    for i, allowed, seg in choices_in(program, answer):
        if seg not in segments:
            continue
        row = logits[n + i - 1, list(allowed)]
        best = allowed[int(row.argmax())]
        got = row[list(allowed).index(answer[i])]
        assert answer[i] == best or float(row.max() - got) < 1e-4, (i, seg)
        checked += 1
    return checked


def test_reason_and_steers_equal_an_uncached_full_forward(dec):
    from model.decoder import draw_trace, resize_for_model
    from model.grammar import forced_trace_program, reasoning_program, steer_visual_program
    from model.processor import reasoning_prompt, steering_prompt
    obs = Observation([image(11, 300, 400)], "pick up the red cube")
    imgs = [resize_for_model(obs.images[0], dec.config.image_size)]
    r = dec.reason(obs)
    assert len(set(r.depth_codes)) > 5                       # the test model is not degenerate
    n = assert_choices_match_full_forward(dec, imgs, reasoning_prompt(obs.instruction, 1), r.token_ids,
                                          reasoning_program(dec.grammar), {"depth", "trace", "action"})
    assert n > 100
    for edited in ([(250, 3)], [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)], [(128, 200), (40, 40)]):
        s = dec.steer_text(edited)
        assert assert_choices_match_full_forward(dec, imgs, reasoning_prompt(obs.instruction, 1), s.token_ids,
                                                 reasoning_program(dec.grammar), {"action"}) >= 7
    v = dec.steer_visual(obs, [(10, 240), (200, 30)])
    drawn = [draw_trace(imgs[0], v.trace, dec.config.trace_thickness)]
    assert assert_choices_match_full_forward(dec, drawn, steering_prompt(obs.instruction, 1), v.token_ids,
                                             steer_visual_program(dec.grammar), {"action"}) >= 7


def test_answer_literals_are_the_reference_wording(dec):
    r = dec.reason(Observation([image(12)], "pick up the red cube"))
    assert r.text.startswith(" The depth map of the image is <DEPTH_START><DEPTH_")
    assert "<DEPTH_END>. The trajectory of the end effector is [[" in r.text
    assert "]]. Based on this information, the action that the robot should take is [" in r.text
    assert r.text.endswith("].")
    v = dec.steer_visual(Observation([image(12)], "x"), [(1, 1)])
    assert v.text.startswith(" Based on the image and the annotated trajectory of the end effector, the action "
                             "that the robot should take is [")


def test_steering_depends_on_the_trace(dec):
    dec.reason(Observation([image(13)], "pick up the red cube"))
    actions = {tuple(dec.steer_text(t).action_token_ids) for t in ([(10, 10)], [(200, 250), (3, 4)], [(128, 0)] * 3)}
    assert len(actions) > 1


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
    assert s.decode_steps <= 20


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


def test_images_are_resized_to_the_model_input_size_and_the_trace_drawn_there(tiny):
    from model.decoder import resize_for_model
    big = image(14, 480, 640)
    assert resize_for_model(big, (256, 256)).shape == (256, 256, 3)
    assert resize_for_model(big, None) is big
    d = MolmoActDecoder(tiny)
    r = d.reason(Observation([big], "pick up the red cube"))
    assert r.prompt_tokens < 600                                   # 256x256 → 424 image tokens, not 766
    native = MolmoActDecoder(tiny, DecoderConfig(image_size=None))
    assert native.reason(Observation([big], "pick up the red cube")).prompt_tokens > 800


def test_unseeded_sampling_gives_fresh_candidates(dec):
    obs = Observation([image(15)], "pick up the red cube")
    a = dec.reason(obs, SamplingConfig(temperature=2.0))
    b = dec.reason(obs, SamplingConfig(temperature=2.0))
    assert a.token_ids != b.token_ids

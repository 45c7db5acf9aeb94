import pytest

from model.grammar import (AnswerFormat, AnswerParseError, Choice, Forced, GrammarTokens, TraceError, check_trace,
                           parse_answer_ids, parse_answer_text, reasoning_program, replay)
from model.tokenizer import MolmoActTokenizer, build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return MolmoActTokenizer(build_tiny_tokenizer())


@pytest.fixture(scope="module")
def gt(tok):
    g = GrammarTokens(tok)
    g.tokenizer_for_tests = tok
    return g


def answer_text(codes, trace, action_tokens, tok, horizon=1, dim=7):
    """The answer exactly as the reference's training data writes it (actions as vocabulary strings)."""
    depth = "<DEPTH_START>" + "".join(f"<DEPTH_{c}>" for c in codes) + "<DEPTH_END>"
    pts = ",".join(f"[{x},{y}]" for x, y in trace)
    rows = [", ".join(tok.id_to_token(t) for t in action_tokens[r * dim:(r + 1) * dim]) for r in range(horizon)]
    acts = "[" + rows[0] + "]" if horizon == 1 else "[" + ", ".join(f"[{r}]" for r in rows) + "]"
    return (f" The depth map of the image is {depth}. The trajectory of the end effector is [{pts}]. "
            f"Based on this information, the action that the robot should take is {acts}.")


def canonical_ids(gt, codes, trace, action_tokens):
    """How the tokenizer itself encodes that text (+ EOS): what a model trained on it emits."""
    tok = gt.tokenizer_for_tests
    return tok.encode(answer_text(codes, trace, action_tokens, tok)) + [gt.eos]


def test_canonical_answer_round_trips(gt, tok):
    codes = [i % 128 for i in range(100)]
    trace = [(242, 115), (140, 77), (94, 58), (0, 255), (153, 26)]
    acts = [300, 301, 302, 400, 511, 256, 257]
    ids = canonical_ids(gt, codes, trace, acts)
    parsed = parse_answer_ids(gt, ids)
    assert parsed.depth_codes == codes and parsed.trace == trace and parsed.action_token_ids == acts
    # The grammar's encoding of a trace is how the tokenizer writes it in running text.
    pts = ",".join(f"[{x},{y}]" for x, y in trace)
    assert list(gt.trace_ids(trace)) == tok.encode(pts[1:] + "].")[1:] or \
        tok.encode(f" is [{pts}].") == tok.encode(" is [[") + list(gt.trace_ids(trace))


@pytest.mark.parametrize("bad, where", [
    ([(256, 3)], "not an allowed trace token"),     # 0..255 only: after "25" a "6" is not offered
    ([(7, 300)], "at token"),                        # after "30" only "]" can follow
])
def test_out_of_range_coordinates_do_not_parse(gt, bad, where):
    ids = canonical_ids(gt, [0] * 100, bad, [300] * 7)
    with pytest.raises(AnswerParseError, match=where):
        parse_answer_ids(gt, ids)


def test_leading_zero_and_six_points_rejected(gt):
    ids = canonical_ids(gt, [0] * 100, [(5, 5)], [300] * 7)
    i = ids.index(gt.digit[5])
    with pytest.raises(AnswerParseError):
        parse_answer_ids(gt, ids[:i] + [gt.digit[0]] + ids[i:])        # "05"
    with pytest.raises(AnswerParseError):
        parse_answer_ids(gt, canonical_ids(gt, [0] * 100, [(1, 1)] * 6, [300] * 7))


def test_parse_errors_say_where(gt):
    ids = canonical_ids(gt, [0] * 100, [(1, 2)], [300] * 7)
    with pytest.raises(AnswerParseError, match="ends at token"):
        parse_answer_ids(gt, ids[:50])
    with pytest.raises(AnswerParseError, match="extra tokens"):
        parse_answer_ids(gt, ids + [gt.eos])
    bad = list(ids)
    bad[len(gt.depth_prefix) + 3] = gt.digit[1]       # a digit where a depth code belongs
    with pytest.raises(AnswerParseError, match="depth"):
        parse_answer_ids(gt, bad)


def drive(prog, script):
    """Run a grammar program, answering each Choice with script(step); returns (ids, choices, result)."""
    ids, choices = [], 0
    step = next(prog)
    while True:
        try:
            if isinstance(step, Forced):
                ids += step.ids
                step = prog.send(None)
            else:
                token = script(step)
                assert token in step.allowed
                choices += 1
                ids.append(token)
                step = prog.send(token)
        except StopIteration as stop:
            return ids, choices, stop.value


def test_jump_forward_asks_only_at_choices(gt):
    """The model is asked only where the grammar branches; forced runs cost no decode step."""
    def script(step):
        if step.segment == "depth":
            return gt.depth_ids[1]
        if step.segment == "trace":
            digits = [t for t in step.allowed if t in gt.digit_of]
            # first digit of a number: "7"; after it: stop the number (non-digit branch) or end the trace
            if set(step.allowed) <= set(gt.digit):
                return gt.digit[7]
            non_digits = [t for t in step.allowed if t not in digits]
            ending = [t for t in non_digits if t in gt.end_trace]
            return (ending or non_digits)[-1] if ending and len(non_digits) > 1 else non_digits[0]
        return step.allowed[0]
    ids, choices, result = drive(reasoning_program(gt), script)
    assert result.trace == [(7, 7)]
    assert parse_answer_ids(gt, ids).trace == [(7, 7)]
    # x: digit + (digit-or-comma); y: digit + (digit-or-"]") + ("],[" vs "]]." branch after the shared "]");
    # each action value: the branch points of a trie over 256 encodings (1..4 per value here)
    action_choices = choices - (100 + 2 + 3)
    assert 7 <= action_choices <= 28
    assert len(ids) - choices > 45     # everything else was appended without asking the model


def test_chunked_actions(tok):
    gt = GrammarTokens(tok, AnswerFormat(action_horizon=8))
    acts = [256 + (37 * i) % 256 for i in range(56)]
    text = answer_text([0] * 100, [(3, 4)], acts, tok, horizon=8)
    assert text.endswith("]].") and text.count("], [") == 7
    ids = tok.encode(text) + [gt.eos]
    parsed = parse_answer_ids(gt, ids)
    assert parsed.action_token_ids == acts and parsed.trace == [(3, 4)]
    assert list(gt.action_ids_text(acts)) == ids[len(ids) - len(gt.action_ids_text(acts)):]


def test_text_parser_reads_reference_style_answers(gt, tok):
    codes = [5] * 100
    trace = [(242, 115), (140, 77)]
    acts = [300, 301, 302, 400, 511, 256, 257]
    parsed = parse_answer_text(answer_text(codes, trace, acts, tok), tok)
    assert parsed.depth_codes == codes and parsed.trace == trace and parsed.action_token_ids == [acts]
    # The custom-LeRobot fine-tunes write the trace twice ("left"/"right" end effector).
    two = "The trajectory of the left end effector is [[1,2],[3,4]]. The trajectory of the right end effector is [[1,2],[3,4]]."
    assert parse_answer_text(two, tok).trace == [(1, 2), (3, 4)]


@pytest.mark.parametrize("text, match", [
    ("nothing here", "no depth, trace or action"),
    ("The trajectory of the end effector is [[1.5,2],[3,4]].", "integer pair"),
    ("The trajectory of the end effector is [[999,2]].", "0..255"),
    ("the action that the robot should take is [not a token at all, x].", "single token"),
    ("<DEPTH_START><DEPTH_1>junk<DEPTH_END>", "inside the depth block"),
])
def test_text_parser_errors(tok, text, match):
    with pytest.raises(AnswerParseError, match=match):
        parse_answer_text(text, tok)


def test_check_trace_clamps_and_rejects():
    assert check_trace([(-5, 300.4), (12.6, 7)]) == [(0, 255), (13, 7)]
    with pytest.raises(TraceError, match="no points"):
        check_trace([])
    with pytest.raises(TraceError, match="6 points"):
        check_trace([(1, 1)] * 6)
    with pytest.raises(TraceError, match="not finite"):
        check_trace([(1, float("nan"))])
    with pytest.raises(TraceError, match="coordinates"):
        check_trace([(1, 2, 3)])


@pytest.mark.parametrize("text, match", [
    ("The trajectory of the end effector is [[1,2],[3]].", "list of \\[x, y\\] points"),
    ("<DEPTH_START><DEPTH_999><DEPTH_END>", "outside the codebook"),
])
def test_text_parser_rejects_partial_points_and_unknown_codes(tok, text, match):
    with pytest.raises(AnswerParseError, match=match):
        parse_answer_text(text, tok)


def test_whole_action_tokens_spell_each_action_value_as_its_own_id():
    """The small sim model's tokenizer: a reference-style answer encodes every action value to the one action
    id, and the grammar's ids and the text parser both read the same actions back."""
    from model.grammar import action_affixes
    whole = MolmoActTokenizer(build_tiny_tokenizer(bpe_vocab=768, embedding_size=1024, trained_vocab=512,
                                                   whole_action_tokens=True))
    g = GrammarTokens(whole)
    g.tokenizer_for_tests = whole
    lo = whole.action_base_id - 256
    for dim in range(7):
        alts = g.action_alternatives(*action_affixes(0, dim, g.fmt))
        assert all([t for t in seq if lo <= t < lo + 256] == [i] for i, seq in alts.items())
    acts = [lo, lo + 1, lo + 127, lo + 128, lo + 200, lo + 254, lo + 255]
    ids = whole.encode(answer_text([5] * 100, [(242, 115), (140, 77)], acts, whole))
    assert [t for t in ids if lo <= t < lo + 256] == acts
    parsed = parse_answer_ids(g, canonical_ids(g, [5] * 100, [(242, 115), (140, 77)], acts))
    assert parsed.action_token_ids == acts
    assert parse_answer_text(answer_text([5] * 100, [(1, 2)], acts, whole), whole).action_token_ids == [acts]
    plain = MolmoActTokenizer(build_tiny_tokenizer(bpe_vocab=768, embedding_size=1024, trained_vocab=512))
    assert len([t for t in plain.encode(answer_text([5] * 100, [(1, 2)], acts, plain))
                if lo <= t < lo + 256]) < 7                          # the default spells them in byte pieces
    with pytest.raises(ValueError, match="fillers"):
        build_tiny_tokenizer(whole_action_tokens=True)


def test_whole_number_tokens_make_each_coordinate_one_choice():
    """The sim model's tokenizer with whole-number tokens: every coordinate 0..255 is one token, the grammar
    offers the 256 of them as one choice, and its ids are how the tokenizer writes the trace in running text."""
    whole = MolmoActTokenizer(build_tiny_tokenizer(bpe_vocab=1024, embedding_size=1280, trained_vocab=512,
                                                   whole_action_tokens=True, whole_number_tokens=True))
    g = GrammarTokens(whole)
    g.tokenizer_for_tests = whole
    assert g.number_ids is not None and len(set(g.number_ids)) == 256
    assert list(g.number_ids[:10]) == g.digit                     # 0..9 are the digit tokens themselves
    trace = [(242, 115), (0, 9), (10, 255), (99, 100), (7, 31)]
    ids = list(g.trace_ids(trace))
    n = len(trace)                                                 # one token per coordinate
    assert len(ids) == 2 * n + n * len(g.comma) + (n - 1) * len(g.next_point) + len(g.end_trace)
    assert [t for t in ids if t in g.number_of] == [g.number_ids[v] for p in trace for v in p]
    pts = ",".join(f"[{x},{y}]" for x, y in trace)
    assert whole.encode(f" is [{pts}].") == whole.encode(" is [[") + ids
    acts = [whole.action_base_id - 256 + k for k in (0, 5, 127, 128, 200, 254, 255)]
    parsed = parse_answer_ids(g, canonical_ids(g, [3] * 100, trace, acts))
    assert parsed.trace == trace and parsed.action_token_ids == acts
    program = reasoning_program(g)
    step = next(program)
    while isinstance(step, Forced) or step.segment == "depth":
        step = program.send(None if isinstance(step, Forced) else g.depth_ids[0])
    assert step.segment == "trace" and set(step.allowed) == set(g.number_ids)
    with pytest.raises(AnswerParseError):                         # "256" is "25" then "6": not a comma
        parse_answer_ids(g, canonical_ids(g, [3] * 100, [(256, 3)], acts))
    for whole_actions in (True, False):     # the numbers' fillers sit below the 256 action fillers either way
        with pytest.raises(ValueError, match="need 502 fillers"):
            build_tiny_tokenizer(bpe_vocab=768, embedding_size=1280, trained_vocab=512,
                                 whole_action_tokens=whole_actions, whole_number_tokens=True)

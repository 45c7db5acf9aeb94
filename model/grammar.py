"""The answer grammar of MolmoAct v1, as a program over token ids.

``The depth map of the image is <DEPTH_START>`` + N codes + ``<DEPTH_END>. The trajectory of the end
effector is [[x,y],…]`` (1..5 points, integers 0..255) ``. Based on this information, the action that
the robot should take is [a1, …, aD].`` + EOS (a chunk checkpoint writes ``[[…], […]]``).

The grammar is a generator that yields ``Forced(ids)`` where it has no choice and ``Choice(allowed)``
where the model must pick; it is told the picked id through ``send``. The decoder drives it with the
model (masking logits to ``allowed``, appending forced runs without a decode step of their own: jump-
forward), and ``parse_answer_ids`` drives it with a finished token list, so decoding and parsing
cannot disagree.

Tokenization: the trace is built from the tokenizer's own encodings of its pieces — digits are single
tokens (Qwen2 pre-tokenizer; a tokenizer whose every integer 0..255 is one token has numbers as single
choices instead) and each punctuation run (``,`` ``],[`` ``]].``) is encoded as the
tokenizer encodes it in running text — so a trace decoded by the model has exactly the token ids of
the canonical string, and ``steer_text`` re-encoding the same trace reproduces them. Where several
continuations are possible, a token trie decides when the model is asked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generator, Sequence

from .tokenizer import NUM_DEPTH_CODES, MolmoActTokenizer

MAX_COORD = 255
DEPTH_PREFIX = " The depth map of the image is "
TRACE_PREFIX = ". The trajectory of the end effector is [["
ACTION_PREFIX = " Based on this information, the action that the robot should take is"
STEER_ACTION_PREFIX = (" Based on the image and the annotated trajectory of the end effector, "
                       "the action that the robot should take is")


class GrammarError(ValueError):
    """The tokenizer cannot express the grammar unambiguously."""


class AnswerParseError(ValueError):
    """An answer (ids or text) that does not follow the grammar; the message says where."""


class TraceError(ValueError):
    """An edited trace that cannot be used (no points, too many, NaN)."""


@dataclass(frozen=True)
class Forced:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Choice:
    allowed: tuple[int, ...]
    segment: str  # "depth" | "trace" | "action": for per-segment timings


@dataclass(frozen=True)
class AnswerFormat:
    depth_codes: int = 100
    max_points: int = 5
    action_dim: int = 7
    action_horizon: int = 1  # rows of the action chunk (8 for LIBERO checkpoints)

    def __post_init__(self) -> None:
        if not 1 <= self.max_points <= 5:
            raise ValueError("max_points must be 1..5")
        if self.depth_codes < 1 or self.action_dim < 1 or self.action_horizon < 1:
            raise ValueError("depth_codes, action_dim and action_horizon must be positive")


@dataclass
class ParsedAnswer:
    depth_codes: list[int] = field(default_factory=list)
    trace: list[tuple[int, int]] = field(default_factory=list)
    action_token_ids: list[int] = field(default_factory=list)  # row-major, horizon*dim


Program = Generator["Forced | Choice", "int | None", ParsedAnswer]


class GrammarTokens:
    """The grammar's pieces encoded once with the checkpoint's tokenizer."""

    def __init__(self, tokenizer: MolmoActTokenizer, fmt: AnswerFormat = AnswerFormat(), n_bins: int = 256) -> None:
        enc = tokenizer.encode
        ids = tokenizer.ids
        self.fmt = fmt
        self.eos = ids.eos
        self.depth_prefix = tuple(enc(DEPTH_PREFIX)) + (ids.depth_start,)
        self.depth_ids = tuple(ids.depth_codes)
        self.depth_code_of = {t: i for i, t in enumerate(ids.depth_codes)}
        self.trace_prefix = (ids.depth_end,) + tuple(enc(TRACE_PREFIX))
        self.comma = tuple(enc(","))
        self.next_point = tuple(enc("],["))
        self.end_trace = tuple(enc("]]."))
        self.action_prefix = tuple(enc(ACTION_PREFIX))
        self.steer_action_prefix = tuple(enc(STEER_ACTION_PREFIX))
        self._encode = enc
        self._alternatives: dict[tuple[str, str], dict[int, tuple[int, ...]]] = {}
        base = tokenizer.action_base_id
        self.action_ids = tuple(range(base - n_bins, base))
        # The reference writes each action token into the answer as its byte-level vocabulary string
        # (that is why its parser maps text pieces back with convert_tokens_to_ids); the model therefore
        # emits the tokenizer's encoding of that string, which is what we constrain to.
        self.action_strings = {t: tokenizer.id_to_token(t) for t in self.action_ids}
        self.digit = []
        for d in range(10):
            e = enc(str(d))
            if len(e) != 1:
                raise GrammarError(f"{tokenizer.source}: digit {d} is not a single token")
            self.digit.append(e[0])
        self.digit_of = {t: d for d, t in enumerate(self.digit)}
        # A tokenizer with whole-number tokens (``build_tiny_tokenizer(whole_number_tokens=True)``) writes
        # each coordinate 0..255 as one token: then a number is one choice among these, in value order.
        whole = [enc(str(v)) for v in range(MAX_COORD + 1)]
        self.number_ids: tuple[int, ...] | None = None
        if all(len(e) == 1 for e in whole):
            self.number_ids = tuple(e[0] for e in whole)
            if len(set(self.number_ids)) != len(self.number_ids):
                raise GrammarError(f"{tokenizer.source}: two numbers share a token")
            self.number_of = {t: v for v, t in enumerate(self.number_ids)}
        for name in ("comma", "next_point", "end_trace"):
            if set(getattr(self, name)[:1]) & set(self.digit):
                raise GrammarError(f"{tokenizer.source}: {name} starts with a digit token")
        if self.next_point[:1] == self.end_trace[:1] and (
                _is_prefix(self.next_point, self.end_trace) or _is_prefix(self.end_trace, self.next_point)):
            raise GrammarError(f"{tokenizer.source}: '],[' and ']].' encodings are ambiguous")

    def action_alternatives(self, prefix: str, suffix: str) -> dict[int, tuple[int, ...]]:
        """action token id → the ids of ``prefix + its string + suffix`` (cached per context)."""
        key = (prefix, suffix)
        alts = self._alternatives.get(key)
        if alts is None:
            alts = {t: tuple(self._encode(prefix + s + suffix)) for t, s in self.action_strings.items()}
            seqs = sorted(alts.values())
            for a, b in zip(seqs, seqs[1:]):
                if _is_prefix(a, b):
                    raise GrammarError(f"action strings encode ambiguously in context {key!r}")
            self._alternatives[key] = alts
        return alts

    def action_ids_text(self, token_ids: Sequence[int]) -> tuple[int, ...]:
        """Canonical ids of an action list (used to force a known action, e.g. for training data)."""
        fmt, out, i = self.fmt, [], 0
        for row in range(fmt.action_horizon):
            for dim in range(fmt.action_dim):
                out += self.action_alternatives(*action_affixes(row, dim, fmt))[token_ids[i]]
                i += 1
        return tuple(out) + (self.eos,)

    def trace_ids(self, trace: Sequence[tuple[int, int]]) -> tuple[int, ...]:
        """The canonical ids of a trace, from the first x up to and including ``]].``."""
        out: list[int] = []
        for i, (x, y) in enumerate(trace):
            out += self.number_tokens(x) + list(self.comma) + self.number_tokens(y)
            out += list(self.end_trace if i == len(trace) - 1 else self.next_point)
        return tuple(out)

    def number_tokens(self, value: int) -> list[int]:
        if self.number_ids is not None:
            return [self.number_ids[int(value)]]
        return [self.digit[int(c)] for c in str(value)]


def _is_prefix(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) <= len(b) and tuple(b[:len(a)]) == tuple(a)


# -- sub-programs ----------------------------------------------------------------------------------
def choose_sequence(alternatives: dict, segment: str):
    """Let the model pick one of several token sequences; forced where they agree (a trie walk)."""
    remaining = {label: tuple(seq) for label, seq in alternatives.items()}
    depth = 0
    while True:
        if len(remaining) == 1:
            label, seq = next(iter(remaining.items()))
            if depth < len(seq):
                yield Forced(seq[depth:])
            return label
        nexts = {seq[depth] for seq in remaining.values() if depth < len(seq)}
        if any(depth >= len(seq) for seq in remaining.values()):
            raise GrammarError(f"ambiguous alternatives {list(remaining)}: one is a prefix of another")
        if len(nexts) == 1:
            token = next(iter(nexts))
            yield Forced((token,))
        else:
            token = yield Choice(tuple(sorted(nexts)), segment)
            if token not in nexts:
                raise AnswerParseError(f"token {token} is not one of the allowed {sorted(nexts)}")
        remaining = {lab: seq for lab, seq in remaining.items() if seq[depth] == token}
        depth += 1


def number_program(gt: GrammarTokens, follow: dict):
    """An integer 0..255 without leading zeros, then one of the ``follow`` sequences."""
    if gt.number_ids is not None:                  # one token per number
        token = yield Choice(gt.number_ids, "trace")
        if token not in gt.number_of:
            raise AnswerParseError(f"expected a number token, got token {token}")
        label = yield from choose_sequence(dict(follow), "trace")
        return gt.number_of[token], label
    first = yield Choice(tuple(gt.digit), "trace")
    if first not in gt.digit_of:
        raise AnswerParseError(f"expected a digit, got token {first}")
    value = gt.digit_of[first]
    while True:
        alts = dict(follow)
        if value != 0:
            for d in range(10):
                if value * 10 + d <= MAX_COORD:
                    alts[("digit", d)] = (gt.digit[d],)
        label = yield from choose_sequence(alts, "trace")
        if isinstance(label, tuple) and label[0] == "digit":
            value = value * 10 + label[1]
            continue
        return value, label


def trace_program(gt: GrammarTokens):
    points: list[tuple[int, int]] = []
    while True:
        x, _ = yield from number_program(gt, {"comma": gt.comma})
        follow = {"end": gt.end_trace}
        if len(points) + 1 < gt.fmt.max_points:
            follow["next"] = gt.next_point
        y, label = yield from number_program(gt, follow)
        points.append((x, y))
        if label == "end":
            return points


def action_affixes(row: int, dim: int, fmt: AnswerFormat) -> tuple[str, str]:
    """Text around one action value, cut where the pre-tokenizer cuts (at the space before each value)."""
    chunk = fmt.action_horizon > 1
    if dim == 0:
        prefix = (" [[" if row == 0 else " [") if chunk else " ["
    else:
        prefix = " "
    if dim < fmt.action_dim - 1:
        suffix = ","
    elif not chunk:
        suffix = "]."
    else:
        suffix = "]]." if row == fmt.action_horizon - 1 else "],"
    return prefix, suffix


def action_program(gt: GrammarTokens):
    """D action values (or a chunk of rows); each is one of 256 token strings, chosen through a trie."""
    fmt = gt.fmt
    chosen: list[int] = []
    for row in range(fmt.action_horizon):
        for dim in range(fmt.action_dim):
            label = yield from choose_sequence(gt.action_alternatives(*action_affixes(row, dim, fmt)), "action")
            chosen.append(label)
    yield Forced((gt.eos,))
    return chosen


def reasoning_program(gt: GrammarTokens) -> Program:
    """The full answer: depth, trace, action."""
    out = ParsedAnswer()
    yield Forced(gt.depth_prefix)
    for _ in range(gt.fmt.depth_codes):
        token = yield Choice(gt.depth_ids, "depth")
        if token not in gt.depth_code_of:
            raise AnswerParseError(f"expected a depth code token, got {token}")
        out.depth_codes.append(gt.depth_code_of[token])
    yield Forced(gt.trace_prefix)
    out.trace = yield from trace_program(gt)
    yield Forced(gt.action_prefix)
    out.action_token_ids = yield from action_program(gt)
    return out


def forced_trace_program(gt: GrammarTokens, trace: Sequence[tuple[int, int]]) -> Program:
    """What ``steer_text`` appends after the cached depth segment: the edited trace, then the action."""
    out = ParsedAnswer(trace=list(trace))
    yield Forced(gt.trace_prefix + gt.trace_ids(trace) + gt.action_prefix)
    out.action_token_ids = yield from action_program(gt)
    return out


def steer_visual_program(gt: GrammarTokens) -> Program:
    """The trajectory-conditioned answer: actions only."""
    out = ParsedAnswer()
    yield Forced(gt.steer_action_prefix)
    out.action_token_ids = yield from action_program(gt)
    return out


# -- parsing -----------------------------------------------------------------------------------------
def replay(program: Program, ids: Sequence[int]) -> ParsedAnswer:
    """Drive a grammar program with a finished token list; any deviation is an AnswerParseError."""
    pos = 0
    try:
        step = next(program)
        while True:
            if isinstance(step, Forced):
                got = tuple(ids[pos:pos + len(step.ids)])
                if got != step.ids:
                    raise AnswerParseError(f"at token {pos}: expected {list(step.ids)}, got {list(got)}")
                pos += len(step.ids)
                step = program.send(None)
            else:
                if pos >= len(ids):
                    raise AnswerParseError(f"answer ends at token {pos} where the grammar expects a {step.segment} token")
                if ids[pos] not in step.allowed:
                    raise AnswerParseError(f"at token {pos}: {ids[pos]} is not an allowed {step.segment} token")
                pos += 1
                step = program.send(ids[pos - 1])
    except StopIteration as stop:
        if pos != len(ids):
            raise AnswerParseError(f"{len(ids) - pos} extra tokens after the end of the answer") from None
        return stop.value


def parse_answer_ids(gt: GrammarTokens, ids: Sequence[int]) -> ParsedAnswer:
    """Depth codes, trace and action token ids from a reasoning answer's token ids."""
    return replay(reasoning_program(gt), list(ids))


# -- tolerant text parsing (answers produced elsewhere: vLLM logs, reference outputs) -----------------
_DEPTH_BLOCK = re.compile(r"<DEPTH_START>(.*?)<DEPTH_END>", re.S)
_DEPTH_CODE = re.compile(r"<DEPTH_(\d+)>")
_TRACE = re.compile(r"trajectory of (?:the )?(?:\w+ )?end effector is\s*(\[\s*\[.*?\]\s*\])", re.S | re.I)
_PAIR = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")
_ACTION = re.compile(r"the action that the robot should take is\s*(\[.*\])", re.S | re.I)


@dataclass
class ParsedText:
    depth_codes: list[int]
    trace: list[tuple[int, int]]
    action_token_ids: list[list[int]]


def parse_answer_text(text: str, tokenizer: MolmoActTokenizer) -> ParsedText:
    """Parse a decoded answer. Missing parts come back empty; malformed parts raise AnswerParseError."""
    depth: list[int] = []
    block = _DEPTH_BLOCK.search(text)
    if block:
        inner = block.group(1)
        depth = [int(c) for c in _DEPTH_CODE.findall(inner)]
        bad = [c for c in depth if c >= NUM_DEPTH_CODES]
        if bad:
            raise AnswerParseError(f"depth code {bad[0]} is outside the codebook (0..{NUM_DEPTH_CODES - 1})")
        if _DEPTH_CODE.sub("", inner).strip():
            raise AnswerParseError(f"unexpected text inside the depth block: {_DEPTH_CODE.sub('', inner).strip()[:40]!r}")
    trace: list[tuple[int, int]] = []
    m = _TRACE.search(text)
    if m:
        inner = re.findall(r"\[([^\[\]]*)\]", m.group(1))
        pairs = _PAIR.findall(m.group(1))
        if not pairs or len(pairs) != len(inner):
            raise AnswerParseError(f"trace {m.group(1)[:60]!r} is not a list of [x, y] points")
        for xs, ys in pairs:
            x, y = float(xs), float(ys)
            if not (x.is_integer() and y.is_integer() and 0 <= x <= MAX_COORD and 0 <= y <= MAX_COORD):
                raise AnswerParseError(f"trace point [{xs}, {ys}] is not an integer pair in 0..255")
            trace.append((int(x), int(y)))
    actions: list[list[int]] = []
    m = _ACTION.search(text)
    if m:
        body = m.group(1).strip()
        body = body[:body.rfind("]") + 1]
        rows = re.findall(r"\[([^\[\]]*)\]", body)
        if not rows:
            raise AnswerParseError(f"action list {body[:60]!r} is empty")
        for row in rows:
            actions.append([_action_piece_id(piece, tokenizer) for piece in _split_row(row)])
    if not (depth or trace or actions):
        raise AnswerParseError("no depth, trace or action found in the text")
    return ParsedText(depth_codes=depth, trace=trace, action_token_ids=actions)


def _split_row(row: str) -> list[str]:
    """Split on the ", " the grammar writes; fall back to "," for hand-written lists."""
    pieces = row.split(", ")
    return pieces if len(pieces) > 1 or "," not in row else row.split(",")


def _action_piece_id(piece: str, tokenizer: MolmoActTokenizer) -> int:
    """An action token from its text: a raw vocabulary string (as logs print them) or decoded text.

    Byte-level tokens may start with a space (decoded text keeps it), so the piece is tried as is
    before it is stripped; quotes from Python-style lists are removed.
    """
    for c in (piece, piece.strip(), piece.strip().strip("'\"")):
        if not c:
            continue
        tid = tokenizer.tok.token_to_id(c)
        if tid is not None:
            return tid
        enc = tokenizer.encode(c)
        if len(enc) == 1:
            return enc[0]
    raise AnswerParseError(f"action piece {piece!r} is not a single token")


def check_trace(trace: Sequence[Sequence[float]], max_points: int = 5) -> list[tuple[int, int]]:
    """An operator's trace → 1..max_points integer points clamped to 0..255; NaN/empty/too long rejected."""
    pts = [tuple(p) for p in trace]
    if not pts:
        raise TraceError("the trace has no points")
    if len(pts) > max_points:
        raise TraceError(f"the trace has {len(pts)} points; at most {max_points} are allowed")
    out = []
    for i, p in enumerate(pts):
        if len(p) != 2:
            raise TraceError(f"trace point {i} has {len(p)} coordinates, expected 2")
        x, y = float(p[0]), float(p[1])
        if x != x or y != y or x in (float("inf"), float("-inf")) or y in (float("inf"), float("-inf")):
            raise TraceError(f"trace point {i} is not finite: ({p[0]}, {p[1]})")
        out.append((min(MAX_COORD, max(0, round(x))), min(MAX_COORD, max(0, round(y)))))
    return out

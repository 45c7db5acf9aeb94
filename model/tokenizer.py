"""The tokenizer, read from the checkpoint directory's ``tokenizer.json`` (no network, no remote code).

MolmoAct's vocabulary layout (``reference/molmoact-internals.md``): byte-level BPE ids, then
``<|endoftext|>`` (EOS = BOS = PAD; its id is also the base of the action bins), the Qwen chat specials,
the depth tokens ``<DEPTH_START>``, ``<DEPTH_END>``, ``<DEPTH_0..127>`` (plain added tokens), padding
specials up to the embedding size, and the image specials starting exactly at ``vocab_size``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers import AddedToken

EOS = "<|endoftext|>"
CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>")
DEPTH_START, DEPTH_END = "<DEPTH_START>", "<DEPTH_END>"
NUM_DEPTH_CODES = 128
NUMBER_TOKENS = 256              # whole_number_tokens: the integers 0..255 (trace coordinates)
IMAGE_SPECIALS = ("<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<|image|>", "<im_low>")
# Qwen2's pre-tokenizer split: digits are single tokens, which the grammar relies on.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


class TokenizerError(ValueError):
    pass


def depth_token(i: int) -> str:
    return f"<DEPTH_{i}>"


@dataclass(frozen=True)
class SpecialIds:
    eos: int
    depth_start: int
    depth_end: int
    depth_codes: tuple[int, ...]  # id of <DEPTH_i> at index i
    im_start: int
    im_end: int
    im_patch: int
    im_col: int


class MolmoActTokenizer:
    """Thin wrapper: encode/decode plus the ids that the processor and grammar need."""

    def __init__(self, tok: Tokenizer, source: str = "tokenizer") -> None:
        self.tok = tok
        self.source = source

        def need(token: str) -> int:
            i = tok.token_to_id(token)
            if i is None:
                raise TokenizerError(f"{source}: token {token!r} is missing from the vocabulary")
            return i

        depth = tuple(need(depth_token(i)) for i in range(NUM_DEPTH_CODES))
        self.ids = SpecialIds(eos=need(EOS), depth_start=need(DEPTH_START), depth_end=need(DEPTH_END),
                              depth_codes=depth, im_start=need("<im_start>"), im_end=need("<im_end>"),
                              im_patch=need("<im_patch>"), im_col=need("<im_col>"))

    @classmethod
    def from_dir(cls, path: str | Path) -> "MolmoActTokenizer":
        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"missing tokenizer file: {file}")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as e:  # the Rust side raises plain Exception on malformed JSON
            raise TokenizerError(f"{file}: cannot read tokenizer ({e})") from None
        return cls(tok, source=str(file))

    @property
    def bos_id(self) -> int:
        """Qwen has no BOS; the reference inserts EOS in its place."""
        return self.ids.eos

    @property
    def action_base_id(self) -> int:
        """Action bins are the last 256 BPE ids before EOS: ``bin = base - token_id``."""
        return self.ids.eos

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        return self.tok.id_to_token(i)

    def vocab_size_with_added(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)


# -- a tiny tokenizer of our own, with the reference's conventions -------------------------
def _tiny_corpus() -> list[str]:
    from .processor import PROMPTS  # local import: processor imports this module
    tasks = ["pick up the red cube", "put the red cube in the bowl", "push the blue block to the left",
             "pick up the green cylinder", "place the yellow ball on the plate", "open the drawer",
             "move the arm to the right", "stack the blocks", "close the gripper", "wipe the table"]
    lines = []
    for t in tasks:
        for template in PROMPTS.values():
            lines.append("User: " + template.format(instruction=t) + " Assistant:")
    lines += ["The depth map of the image is . The trajectory of the end effector is [[12,34],[56,78]]. "
              "Based on this information, the action that the robot should take is [a, b, c].",
              "Based on the image and the annotated trajectory of the end effector, the action that the "
              "robot should take is [x, y].", "Image 1 Image 2 Image 3"]
    words = ("robot arm gripper camera depth table object cube bowl plate block ball drawer left right up down "
             "forward backward rotate grasp release lift lower slowly carefully first second third then").split()
    lines += [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    return lines


def build_tiny_tokenizer(bpe_vocab: int = 512, embedding_size: int = 768, trained_vocab: int = 512,
                         chat_specials: int = 2, corpus: list[str] | None = None,
                         whole_action_tokens: bool = False, whole_number_tokens: bool = False) -> Tokenizer:
    """Byte-level BPE + the MolmoAct added tokens, padded to ``embedding_size``.

    ``trained_vocab`` ids are learned on a small corpus; if ``bpe_vocab`` is larger the rest are inert
    filler entries, which gives the real Qwen id layout (EOS at 151643, images at 152064) for
    random-weight benchmarks at the 7B shape without shipping Qwen's vocabulary (with
    ``chat_specials=21`` the depth tokens land at 151665.., as in MolmoAct-7B-D). ``corpus``: the lines the
    BPE merges are learned from (default: a small generic one).

    ``whole_action_tokens``: each action id's string encodes to that one id (an added token that keeps
    the filler's id). Without it a small BPE spells an action value in 2-5 pieces whose boundaries differ
    from one bin to the next, so a model has to learn 256 unrelated spellings and a wrong first piece
    lands far away; with it an action value is one choice among the 256 ids, as it is for a model that
    emits the action ids themselves.

    ``whole_number_tokens``: each integer 10..255 (a trace coordinate) is one token too, kept in fillers
    just below the action ids (the digits 0..9 already are single tokens). The Qwen2 pre-tokenizer
    spells "123" as three digit tokens, so a small model writes a coordinate as a variable-length digit
    string, where a wrong first digit costs the same as a wrong last one, and reads it back by
    arithmetic over digits; with it a coordinate is one choice among 256 ordered values. The grammar
    detects this (``GrammarTokens.number_ids``); the answer text is the same.
    """
    if trained_vocab < 256 + 64 or bpe_vocab < trained_vocab:
        raise TokenizerError("bpe_vocab must leave room for 256 action ids above the 256 byte tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=trained_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator((corpus or _tiny_corpus()) * 4, trainer=trainer)
    if tok.get_vocab_size() != trained_vocab:
        raise TokenizerError(f"tiny BPE trained to {tok.get_vocab_size()} ids, wanted {trained_vocab}")
    numbers = [str(v) for v in range(10, NUMBER_TOKENS)] if whole_number_tokens else []
    # the number fillers sit below the 256 action fillers, so either option needs all of those
    needed = 256 + len(numbers) if (numbers or whole_action_tokens) else 0
    if bpe_vocab - trained_vocab < needed:
        raise TokenizerError(f"whole_action_tokens / whole_number_tokens need {needed} fillers "
                             f"(bpe_vocab >= trained_vocab + {needed})")
    if bpe_vocab > trained_vocab:
        tok = _with_fillers(tok, bpe_vocab, named=numbers)
    if numbers:
        tok.add_tokens([AddedToken(n, special=False, normalized=False) for n in numbers])
    if whole_action_tokens:
        tok.add_tokens([AddedToken(action_string(k), special=False, normalized=False) for k in range(256)])
    specials = list(CHAT_SPECIALS) + [f"<|reserved_special_{i}|>" for i in range(chat_specials - len(CHAT_SPECIALS))]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (EOS, *specials)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in (DEPTH_START, DEPTH_END, *(depth_token(i) for i in range(NUM_DEPTH_CODES)))])
    n_pad = embedding_size - tok.get_vocab_size(with_added_tokens=True)
    if n_pad < 0:
        raise TokenizerError("embedding_size is smaller than the vocabulary")
    tok.add_special_tokens([AddedToken(f"|<EXTRA_TOKENS_{i}>|", special=True, normalized=False)
                            for i in range(n_pad)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in IMAGE_SPECIALS])
    return tok


def byte_level(text: str) -> str:
    """GPT-2/Qwen byte-level spelling of ``text`` (how such vocabularies write tokens)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return "".join(table[b] for b in text.encode("utf-8"))


def action_string(k: int) -> str:
    """The vocabulary string of action bin ``k`` (0..255): a CJK character in byte-level spelling."""
    return byte_level(chr(0x4E00 + k))


def _with_fillers(tok: Tokenizer, size: int, n_action: int = 256, named: list[str] = ()) -> Tokenizer:
    """Extend a trained BPE's vocabulary with entries no merge produces.

    ``named``: strings for the fillers just below the action ids (the whole-number tokens), in order.

    The last ``n_action`` fillers (the action ids) are spelled like Qwen's last merges: byte-level
    strings of single CJK characters (e.g. "ä¸Ģ"), so the answer text and its token counts look like
    the real vocabulary's rather than like long placeholder names.
    """
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    first_named = size - n_action - len(named)
    for i in range(len(vocab), size):
        k = i - (size - n_action)
        if k >= 0:
            vocab[action_string(k)] = i
        elif i >= first_named:
            vocab[named[i - first_named]] = i
        else:
            vocab[f"<filler_{i}>"] = i
    return Tokenizer.from_str(json.dumps(data))


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """tokenizer.json plus the small HF side files the official directory also carries."""
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": EOS, "pad_token": EOS,
        "padding_side": "left", "model_max_length": 4096}, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps({"eos_token": EOS, "pad_token": EOS}, indent=2))

"""Export the store to Parquet in a layout Hugging Face ``datasets`` loads as is.

``OUT_DIR/data/train-00000-of-00001.parquet``: one row per preference pair (answers ``A``/``B``; ties and
both-bad answers are not pairs and are left out, the summary counts them), with
- ``image``: the first camera image as ``datasets``' Image struct ``{"bytes": PNG, "path": None}``; the
  parquet schema carries ``datasets``' feature metadata so it decodes to a PIL image;
- ``prompt``: the MolmoAct reasoning prompt for the instruction (one image), ``instruction`` on its own;
- ``chosen`` / ``rejected``: each candidate written as the trace and action part of a MolmoAct answer
  (``The trajectory of the end effector is [[x,y],…]. Based on this information, the action that the
  robot should take is [a1, …].``). The model itself writes each action value as one of 256 action
  tokens of its tokenizer; here the values are the un-normalized numbers, since turning them into tokens
  needs the checkpoint's tokenizer and norm stats: the structured columns carry everything for that;
- structured columns: ``chosen_trace``/``rejected_trace`` (``[[x, y], …]``, model space 0..255),
  ``chosen_action``/``rejected_action`` (un-normalized), ``…_action_normalized``, ``…_label``,
  ``…_model_id``, ``…_mode``, and ``kind``, ``answer`` (which side was chosen on screen), ``model_id``,
  ``unnorm_key``, ``operator``, ``created_at`` (UTC), ``comment``, ``recording``/``episode_index``/
  ``frame_index``, ``image_sha256``, ``id``.

``OUT_DIR/ratings/train-00000-of-00001.parquet``: one row per rating (scores 1..5 or null, note, the rated
step). ``OUT_DIR/README.md`` declares both as configs (``pairs``, the default, and ``ratings``), so
``datasets.load_dataset(OUT_DIR)`` works as well as ``load_dataset("parquet", data_files=…)``.

Files are written under a temporary name and renamed, so an interrupted export never leaves half a file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from model.grammar import ACTION_PREFIX, TRACE_PREFIX

from .records import Candidate
from .store import PreferenceStore, SchemaOutdatedError, StoreError, StoreNotFoundError

PAIRS_FILE = Path("data") / "train-00000-of-00001.parquet"
RATINGS_FILE = Path("ratings") / "train-00000-of-00001.parquet"
ROW_GROUP_SIZE = 64            # small row groups: rows carry images (the Hub's own advice for image data)

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
TRACE_TYPE = pa.list_(pa.list_(pa.int32()))
VECTOR_TYPE = pa.list_(pa.float64())


class ExportError(StoreError):
    """The export could not be written (the output folder); the database is untouched."""


def answer_text(c: Candidate) -> str:
    """A candidate as the trace and action part of a MolmoAct answer (``model.grammar``'s wording)."""
    trace = "],[".join(f"{x},{y}" for x, y in c.trace)
    action = ", ".join(format(v, ".6g") for v in c.action)
    return f"{TRACE_PREFIX.lstrip('. ')}{trace}]].{ACTION_PREFIX} [{action}]."


def _prompt_fn() -> Callable[[str], str]:
    from model.processor import reasoning_prompt      # loads torch: only when exporting
    return lambda instruction: reasoning_prompt(instruction, 1)


def _vec(v: Iterable[float] | None) -> list[float] | None:
    return None if v is None else list(v)


def _trace(c: Candidate) -> list[list[int]]:
    return [[x, y] for x, y in c.trace]


def _common_fields() -> list[pa.Field]:
    return [pa.field("id", pa.int64(), nullable=False), pa.field("created_at", TIMESTAMP_TYPE),
            pa.field("operator", pa.string()), pa.field("instruction", pa.string()),
            pa.field("prompt", pa.string()), pa.field("image", IMAGE_TYPE),
            pa.field("image_sha256", pa.string()), pa.field("unnorm_key", pa.string())]


def _side_fields(side: str) -> list[pa.Field]:
    return [pa.field(side, pa.string()), pa.field(f"{side}_label", pa.string()),
            pa.field(f"{side}_model_id", pa.string()), pa.field(f"{side}_mode", pa.string()),
            pa.field(f"{side}_trace", TRACE_TYPE), pa.field(f"{side}_action", VECTOR_TYPE),
            pa.field(f"{side}_action_normalized", VECTOR_TYPE)]


_LINK_FIELDS = [pa.field("recording", pa.string()), pa.field("episode_index", pa.int64()),
                pa.field("frame_index", pa.int64())]


def _with_hf_metadata(fields: list[pa.Field]) -> pa.Schema:
    """``datasets`` reads features from the ``huggingface`` schema metadata; naming the image column is
    enough (the others are inferred from their Arrow types)."""
    meta = {"info": {"features": {"image": {"_type": "Image"}}}}
    return pa.schema(fields, metadata={b"huggingface": json.dumps(meta).encode()})


PAIRS_SCHEMA = _with_hf_metadata(_common_fields() + [pa.field("model_id", pa.string()), pa.field("kind", pa.string()),
                                                     pa.field("answer", pa.string())]
                                 + _side_fields("chosen") + _side_fields("rejected")
                                 + [pa.field("comment", pa.string())] + _LINK_FIELDS)

RATINGS_SCHEMA = _with_hf_metadata(_common_fields() + [
    pa.field("model_id", pa.string()), pa.field("label", pa.string()), pa.field("mode", pa.string()),
    pa.field("response", pa.string()), pa.field("trace", TRACE_TYPE), pa.field("action", VECTOR_TYPE),
    pa.field("action_normalized", VECTOR_TYPE), pa.field("sent", VECTOR_TYPE),
    pa.field("depth_codes", pa.list_(pa.int32())), pa.field("depth_score", pa.int8()),
    pa.field("trace_score", pa.int8()), pa.field("action_score", pa.int8()), pa.field("note", pa.string()),
] + _LINK_FIELDS)


def _common(d: dict[str, Any], prompt: Callable[[str], str]) -> dict[str, Any]:
    return {"id": d["id"], "created_at": int(round(d["created_at"] * 1e6)), "operator": d["operator"],
            "instruction": d["instruction"], "prompt": prompt(d["instruction"]),
            "image": {"bytes": bytes(d["image_png"]), "path": None}, "image_sha256": d["image_sha256"],
            "unnorm_key": d["unnorm_key"], "recording": d["recording"], "episode_index": d["episode_index"],
            "frame_index": d["frame_index"]}


def _side(side: str, c: Candidate) -> dict[str, Any]:
    return {side: answer_text(c), f"{side}_label": c.label, f"{side}_model_id": c.model_id,
            f"{side}_mode": c.mode, f"{side}_trace": _trace(c), f"{side}_action": list(c.action),
            f"{side}_action_normalized": _vec(c.action_normalized)}


def pair_rows(store: PreferenceStore, prompt: Callable[[str], str]) -> Iterator[dict[str, Any]]:
    for d in store.comparison_rows(answers=("A", "B")):
        chosen, rejected = (d["a"], d["b"]) if d["answer"] == "A" else (d["b"], d["a"])
        row = _common(d, prompt)
        row.update(model_id=d["model_id"], kind=d["kind"], answer=d["answer"], comment=d["comment"])
        row.update(_side("chosen", chosen))
        row.update(_side("rejected", rejected))
        yield row


def rating_rows(store: PreferenceStore, prompt: Callable[[str], str]) -> Iterator[dict[str, Any]]:
    for d in store.rating_rows():
        c: Candidate = d["candidate"]
        row = _common(d, prompt)
        row.update(model_id=c.model_id, label=c.label, mode=c.mode, response=answer_text(c), trace=_trace(c),
                   action=list(c.action), action_normalized=_vec(c.action_normalized), sent=_vec(c.sent),
                   depth_codes=None if c.depth_codes is None else list(c.depth_codes),
                   depth_score=d["depth_score"], trace_score=d["trace_score"], action_score=d["action_score"],
                   note=d["note"])
        yield row


def write_parquet(rows: Iterable[dict[str, Any]], schema: pa.Schema, path: Path,
                  row_group_size: int = ROW_GROUP_SIZE) -> int:
    """Stream rows into ``path`` (via a temporary file renamed at the end); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            batch: list[dict[str, Any]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= row_group_size:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=row_group_size)
                    n += len(batch)
                    batch = []
            if batch or n == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=row_group_size)
                n += len(batch)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _readme(pairs: int, ratings: int) -> str:
    return f"""---
configs:
- config_name: pairs
  data_files:
  - split: train
    path: {PAIRS_FILE.as_posix()}
  default: true
- config_name: ratings
  data_files:
  - split: train
    path: {RATINGS_FILE.as_posix()}
---
# MolmoAct steering station: operator feedback

Exported by `python -m app.feedback export`. `pairs` ({pairs} rows): preference pairs (`prompt`, `image`,
`chosen`, `rejected`, and the traces and actions as columns); ties and both-bad answers are left out.
`ratings` ({ratings} rows): single reasoning steps rated 1-5 for depth, trace and action.
Traces are in the model's space (0..255 on the image); actions are un-normalized.
"""


@dataclass(frozen=True)
class ExportSummary:
    pairs: int
    ties: int
    both_bad: int
    ratings: int
    out_dir: Path
    files: tuple[Path, ...]

    def line(self, db: str | os.PathLike) -> str:
        return (f"exported {self.pairs} preference pairs (left out: {self.ties} ties, {self.both_bad} both bad) "
                f"and {self.ratings} ratings from {db} to {self.out_dir}")


def open_for_export(path: str | os.PathLike) -> PreferenceStore:
    """Read-only when possible; an older schema is opened for writing once, which migrates it in place."""
    if not Path(path).is_file():
        raise StoreNotFoundError(f"There is no feedback database at {path}.", path)
    try:
        return PreferenceStore(path, readonly=True)
    except SchemaOutdatedError:
        return PreferenceStore(path)


def export(db: PreferenceStore | str | os.PathLike, out_dir: str | os.PathLike, *,
           row_group_size: int = ROW_GROUP_SIZE) -> ExportSummary:
    """Write the pairs (and ratings) Parquet files and a README with the ``datasets`` configs."""
    store = db if isinstance(db, PreferenceStore) else open_for_export(db)
    out = Path(out_dir)
    try:
        counts = store.counts()
        prompt = _prompt_fn()
        files = (out / PAIRS_FILE, out / RATINGS_FILE, out / "README.md")
        try:
            n_pairs = write_parquet(pair_rows(store, prompt), PAIRS_SCHEMA, files[0], row_group_size)
            n_ratings = write_parquet(rating_rows(store, prompt), RATINGS_SCHEMA, files[1], row_group_size)
            files[2].write_text(_readme(n_pairs, n_ratings), encoding="utf-8")
        except OSError as exc:
            raise ExportError(f"Cannot write the export to {out}: {exc}. The feedback database is untouched; "
                              "choose another output folder or free space.", out) from exc
        return ExportSummary(n_pairs, counts["tie"], counts["both_bad"], n_ratings, out, files)
    finally:
        if store is not db:
            store.close()


__all__ = ["ExportError", "ExportSummary", "PAIRS_FILE", "PAIRS_SCHEMA", "RATINGS_FILE", "RATINGS_SCHEMA",
           "answer_text", "export", "open_for_export"]

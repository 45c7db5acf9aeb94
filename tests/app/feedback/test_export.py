"""Parquet export (HF `datasets` layout) and the `python -m app.feedback` command line."""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from app.feedback.__main__ import main
from app.feedback.export import PAIRS_FILE, RATINGS_FILE, answer_text, export
from app.feedback.store import SCHEMA_VERSION, PreferenceStore, decode_png

from .factories import candidate, comparison, image, rating
from .test_store import make_v1

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "feedback.sqlite"
    with PreferenceStore(path) as s:
        s.add_comparison(comparison(0, answer="A"))
        s.add_comparison(comparison(1, answer="B", kind="two_modes", a="steer_text", b="steer_visual",
                                    comment="B follows the edit", recording="rec", episode_index=1, frame_index=7))
        s.add_comparison(comparison(2, answer="tie"))
        s.add_comparison(comparison(3, answer="both_bad"))
        s.add_comparison(comparison(4, answer="B", img=image(0)))        # same frame as the first
        s.add_rating(rating(5))
        s.add_rating(rating(6, depth_score=None))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_answer_text_mirrors_the_grammar():
    from model.grammar import ACTION_PREFIX, TRACE_PREFIX
    c = candidate(trace=[(12, 200), (0, 255)], action=[0.5, -0.25, 1e-7, 0, 0, 0, 1])
    text = answer_text(c)
    assert text == ("The trajectory of the end effector is [[12,200],[0,255]]. Based on this information, the "
                    "action that the robot should take is [0.5, -0.25, 1e-07, 0, 0, 0, 1].")
    assert TRACE_PREFIX.lstrip(". ") in text and ACTION_PREFIX in text
    # model.grammar's own tolerant parser reads the trace back
    from model.grammar import _TRACE, _PAIR
    pairs = _PAIR.findall(_TRACE.search(text).group(1))
    assert [(int(x), int(y)) for x, y in pairs] == [(12, 200), (0, 255)]


def test_export_pairs_and_ratings(db, tmp_path):
    out = tmp_path / "out"
    before = digest(db)
    summary = export(db, out)
    assert (summary.pairs, summary.ties, summary.both_bad, summary.ratings) == (3, 1, 1, 2)
    assert summary.line(db).startswith("exported 3 preference pairs (left out: 1 ties, 1 both bad) and 2 ratings")
    assert digest(db) == before                                          # opened read-only
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md", PAIRS_FILE.as_posix(), RATINGS_FILE.as_posix()]

    table = pq.read_table(out / PAIRS_FILE)
    meta = json.loads(table.schema.metadata[b"huggingface"])
    assert meta["info"]["features"]["image"] == {"_type": "Image"}
    rows = table.to_pylist()
    with PreferenceStore(db, readonly=True) as s:
        stored = [c for c in s.comparisons() if c.answer in ("A", "B")]
    assert [r["id"] for r in rows] == [c.id for c in stored]
    for row, c in zip(rows, stored):
        chosen, rejected = (c.a, c.b) if c.answer == "A" else (c.b, c.a)
        assert row["answer"] == c.answer and row["kind"] == c.kind
        assert row["chosen_label"] == chosen.label and row["rejected_label"] == rejected.label
        assert row["chosen"] == answer_text(chosen) and row["rejected"] == answer_text(rejected)
        assert row["chosen_trace"] == [list(p) for p in chosen.trace]
        assert row["rejected_action"] == list(rejected.action)
        assert row["chosen_action_normalized"] == list(chosen.action_normalized)
        assert row["chosen_mode"] == chosen.mode and row["model_id"] == c.model_id
        assert np.array_equal(decode_png(row["image"]["bytes"]), c.image) and row["image"]["path"] is None
        assert row["created_at"] == datetime.fromtimestamp(c.created_at, timezone.utc)
        assert row["prompt"].startswith(f"The task is {c.instruction}.") and row["instruction"] == c.instruction
        assert row["unnorm_key"] == c.unnorm_key and row["operator"] == c.operator
    assert rows[1]["chosen_label"] == "steer_visual" and rows[1]["comment"] == "B follows the edit"
    assert (rows[1]["recording"], rows[1]["episode_index"], rows[1]["frame_index"]) == ("rec", 1, 7)
    assert rows[0]["image_sha256"] == rows[2]["image_sha256"]

    ratings = pq.read_table(out / RATINGS_FILE).to_pylist()
    assert [(r["depth_score"], r["trace_score"], r["action_score"]) for r in ratings] == [(4, 2, 5), (None, 2, 5)]
    assert ratings[0]["depth_codes"] == list(range(100)) and ratings[0]["note"] == "the trace misses the cube"
    assert ratings[0]["response"].startswith("The trajectory of the end effector is [[")
    readme = (out / "README.md").read_text()
    assert "config_name: pairs" in readme and f"path: {PAIRS_FILE.as_posix()}" in readme


def test_export_loads_with_hf_datasets(db, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    export(db, out)
    ds = datasets.load_dataset("parquet", data_files={"train": str(out / PAIRS_FILE)}, split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 3
    assert type(ds.features["image"]).__name__ == "Image"
    first = ds[0]
    assert first["image"].size == (32, 24) and first["image"].mode == "RGB"
    assert np.array_equal(np.asarray(first["image"]), image(0))
    assert {"prompt", "chosen", "rejected", "chosen_trace", "rejected_action"} <= set(ds.column_names)
    both = datasets.load_dataset(str(out), "ratings", split="train", cache_dir=str(tmp_path / "cache"))
    assert both.num_rows == 2


def test_export_of_an_empty_database(tmp_path):
    PreferenceStore(tmp_path / "empty.db").close()
    summary = export(tmp_path / "empty.db", tmp_path / "out")
    assert summary.pairs == 0 and summary.ratings == 0
    table = pq.read_table(tmp_path / "out" / PAIRS_FILE)
    assert table.num_rows == 0 and "chosen_trace" in table.column_names


def test_export_migrates_an_old_database(tmp_path):
    make_v1(tmp_path / "v1.db")
    summary = export(tmp_path / "v1.db", tmp_path / "out")
    assert summary.pairs == 1 and summary.ratings == 1
    conn = sqlite3.connect(tmp_path / "v1.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_reexport_replaces_files_and_leaves_no_temporaries(db, tmp_path):
    out = tmp_path / "out"
    export(db, out)
    with PreferenceStore(db) as s:
        s.add_comparison(comparison(9, answer="A"))
    assert export(db, out).pairs == 4
    assert pq.read_table(out / PAIRS_FILE).num_rows == 4
    assert not [p for p in out.rglob(".*tmp*")]


# ---------------------------------------------------------------------------------------- command line

def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_export_and_leaderboard_and_check(db, tmp_path, capsys):
    code, out, err = run_main(capsys, "export", db, tmp_path / "out")
    assert code == 0 and err == "" and len(out.strip().splitlines()) == 1 and out.startswith("exported 3 ")
    code, out, _ = run_main(capsys, "leaderboard", db, "--bootstrap", "50")
    assert code == 0 and "operator_edit" in out and "95% CI" in out
    code, out, _ = run_main(capsys, "leaderboard", db, "--json", "--kind", "two_modes")
    board = json.loads(out)
    assert code == 0 and [r["label"] for r in board["rows"]] == ["steer_visual", "steer_text"]
    code, out, _ = run_main(capsys, "check", db)
    assert code == 0 and out.startswith("ok:") and "5 comparisons" in out and "2 ratings" in out


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_cli_bad_inputs_exit_2_with_one_error_line(db, tmp_path, capsys):
    code, out, err = run_main(capsys, "export", tmp_path / "missing.db", tmp_path / "o1")
    assert code == 2 and out == "" and "no feedback database" in _one_error_line(err)
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "o1").exists()

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 20)
    code, _, err = run_main(capsys, "export", junk, tmp_path / "o2")
    assert code == 2 and "not a SQLite database" in _one_error_line(err)

    newer = tmp_path / "newer.db"
    newer.write_bytes(db.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = digest(newer)
    for cmd in ("export", "leaderboard", "check"):
        argv = [cmd, newer] + ([tmp_path / "o3"] if cmd == "export" else [])
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and "version 99" in _one_error_line(err)
    assert digest(newer) == before

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_main(capsys, "export", db, blocker)
    assert code == 2 and "Cannot write the export" in _one_error_line(err)

    code, _, err = run_main(capsys, "leaderboard", db, "--reference", "nobody")
    assert code == 2 and "reference 'nobody'" in _one_error_line(err)


def test_python_dash_m_entry_point(db, tmp_path):
    """The documented command, as a real process."""
    out_dir = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "app.feedback", "export", str(db), str(out_dir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"exported 3 preference pairs \(left out: 1 ties, 1 both bad\) and 2 ratings from .+\n",
                        r.stdout)
    assert pq.read_table(out_dir / PAIRS_FILE).num_rows == 3
    r = subprocess.run([sys.executable, "-m", "app.feedback", "export", str(tmp_path / "nope.db"), str(out_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: ")

"""``python -m app.feedback``: export, rank and check a feedback database.

    python -m app.feedback export DB OUT_DIR          # Parquet for `datasets` (pairs + ratings)
    python -m app.feedback leaderboard DB [--kind K] [--reference LABEL] [--json]
    python -m app.feedback check DB                   # SQLite integrity check and counts

Success prints one line (a table for ``leaderboard``) and exits 0. A database that cannot be used (missing,
newer schema, damaged, not ours) or an output that cannot be written prints one ``error: …`` line on
stderr and exits 2 (argparse's usage errors exit 2 too).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .records import KINDS
from .store import PreferenceStore, StoreError, StoreNotFoundError


def _open(path: str) -> PreferenceStore:
    from .export import open_for_export
    return open_for_export(path)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export
    summary = export(args.db, args.out_dir)
    print(summary.line(args.db))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import leaderboard
    with _open(args.db) as store:
        outcomes = store.outcomes(kind=args.kind)
    try:
        board = leaderboard(outcomes, reference=args.reference, bootstrap=args.bootstrap, seed=args.seed)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in board.rows], "n_comparisons": board.n_comparisons,
                          "n_both_bad": board.n_both_bad, "n_same_label": board.n_same_label,
                          "reference": board.reference, "level": board.level, "bootstrap": board.bootstrap,
                          "unranked": board.unranked}))
    else:
        print(board.table())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if not Path(args.db).is_file():
        raise StoreNotFoundError(f"There is no feedback database at {args.db}.", args.db)
    with PreferenceStore(args.db, readonly=True) as store:
        result = store.check()
        counts = store.counts()
        version = store.schema_version
    if result != "ok":
        first = result.splitlines()[0]
        raise StoreError(f"{args.db} is damaged: {first} ({len(result.splitlines())} problems); keep a copy, "
                         f"`sqlite3 {args.db} .recover` may rescue its rows.", args.db)
    print(f"ok: {args.db} schema v{version}, {counts['comparisons']} comparisons ({counts['A']} A, {counts['B']} B, "
          f"{counts['tie']} tie, {counts['both_bad']} both bad), {counts['ratings']} ratings, "
          f"{counts['images']} images")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.feedback", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write the preference pairs and ratings as Parquet (HF datasets layout)")
    e.add_argument("db", help="the feedback database (SQLite)")
    e.add_argument("out_dir", help="output folder (data/, ratings/, README.md are written there)")
    e.set_defaults(func=cmd_export)
    lb = sub.add_parser("leaderboard", help="Bradley-Terry scores with bootstrap confidence intervals")
    lb.add_argument("db")
    lb.add_argument("--kind", choices=KINDS, help="rank one kind of comparison only")
    lb.add_argument("--reference", help="the label placed at 1000 (default: the mean)")
    lb.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    lb.add_argument("--seed", type=int, default=0)
    lb.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    lb.set_defaults(func=cmd_leaderboard)
    c = sub.add_parser("check", help="integrity check and counts (read-only)")
    c.add_argument("db")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StoreError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The whole recipe in one command: the scripted data, a base run, then DAgger rounds, each continuing the
previous checkpoint on the scripted data plus the episodes that checkpoint drove, labelled by the experts.

One process on purpose: a round reuses the scripted records held in memory, instead of replaying the
scripted episodes (about 10 minutes on 2 cores) or reading a pickle of several GB; and one clock covers the
chain from an empty directory to the checkpoint, which is what a training budget measures.

    python -m app.sim.chain --out DIR --seed 0 --threads 2 --steps 2000 --round 40,60,1000 [train options]

``--round E,S,STEPS[,LR]``: the previous checkpoint drives E picks and S steered picks; then STEPS steps at
peak LR (default 7e-4) continue it. Every other option is ``app.sim.train``'s and sets the base run (and the
data every round shares). The intermediate checkpoints go to ``--work`` (default ``DIR.rounds``); the last
round writes DIR, with ``chain_log.json`` (every stage's seconds and the total).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from app.sim.datagen import generate
from app.sim.train import TrainConfig, _cached_records, data_config, parse_command, train

ROUND_LR = 7e-4
# app.sim.train's options that a round sets itself
ROUND_SET = ("init_from", "dagger_from", "dagger_episodes", "dagger_steer_episodes", "data_only", "train_seconds")


@dataclass(frozen=True)
class Round:
    episodes: int            # picks the previous checkpoint drives
    steer_episodes: int      # picks it drives while steered onto another object
    steps: int
    lr: float = ROUND_LR


def parse_round(text: str) -> Round:
    parts = text.split(",")
    try:
        if len(parts) not in (3, 4):
            raise ValueError
        e, s, n = (int(p) for p in parts[:3])
        lr = float(parts[3]) if len(parts) == 4 else ROUND_LR
    except ValueError:
        raise argparse.ArgumentTypeError(f"--round wants EPISODES,STEER_EPISODES,STEPS[,LR], got {text!r}")
    if min(e, s) < 0 or e + s == 0 or n <= 0 or lr <= 0:
        raise argparse.ArgumentTypeError(f"--round {text!r}: a round drives at least one episode and trains "
                                         f"at least one step at a positive lr")
    return Round(e, s, n, lr)


def round_config(base: TrainConfig, previous: Path, r: Round) -> TrainConfig:
    """Round ``r`` continues ``previous`` on the base's data plus the episodes ``previous`` drives."""
    return replace(base, init_from=previous, steps=r.steps, lr=r.lr, train_seconds=None,
                   data=replace(base.data, policy=str(previous), policy_episodes=r.episodes,
                                policy_steer_episodes=r.steer_episodes))


def run_chain(base: TrainConfig, rounds: list[Round], out: Path, work: Path, log=print,
              data_cache: Path | None = None) -> dict:
    if base.init_from is not None or base.data.policy is not None:
        raise ValueError("the chain starts from scratch: its rounds set --init-from and --dagger-from themselves")
    t0 = time.perf_counter()
    stages: list[dict] = []
    scripted = _cached_records(data_config(base), data_cache, log)
    stages.append({"stage": "scripted data", "records": len(scripted), "s": round(time.perf_counter() - t0, 1)})
    log(f"chain: {len(scripted)} scripted steps in {stages[-1]['s']:.0f} s")
    previous = out if not rounds else work / "base"
    summary = train(base, previous, log=log, records=scripted)
    stages.append({"stage": "base", "dir": str(previous), **summary})
    for k, r in enumerate(rounds, 1):
        cfg = round_config(base, previous, r)
        t = time.perf_counter()
        records = generate(data_config(cfg), scripted=scripted)
        stages.append({"stage": f"round {k} data", "episodes": r.episodes, "steer_episodes": r.steer_episodes,
                       "records": len(records), "s": round(time.perf_counter() - t, 1)})
        log(f"chain: round {k}: {len(records) - len(scripted)} steps from {previous} in {stages[-1]['s']:.0f} s")
        here = out if k == len(rounds) else work / f"round{k}"
        summary = train(cfg, here, log=log, records=records)
        stages.append({"stage": f"round {k}", "dir": str(here), **summary})
        previous = here
        del records
    result = {"stages": stages, "rounds": [r.__dict__ for r in rounds], "total_s": round(time.perf_counter() - t0, 1)}
    (out / "chain_log.json").write_text(json.dumps(result, indent=1))
    log(f"chain: {out} in {result['total_s']:.0f} s ({result['total_s'] / 60:.1f} min)")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.sim.chain", description=__doc__.split("\n")[0],
                                epilog="every other option is app.sim.train's (python -m app.sim.train -h)")
    p.add_argument("--round", type=parse_round, action="append", default=[], dest="rounds",
                   metavar="E,S,STEPS[,LR]")
    p.add_argument("--work", type=Path, default=None, help="the intermediate checkpoints (default: OUT.rounds)")
    own, rest = p.parse_known_args(argv)
    cfg, args = parse_command(rest)
    defaults = vars(parse_command([])[1])
    for name in ROUND_SET:      # read from the parsed options, so an abbreviation (--init) is caught too
        if getattr(args, name) != defaults[name]:
            p.error(f"--{name.replace('_', '-')} is not a chain option: the rounds set what it would")
    out = Path(args.out)
    work = own.work or out.with_name(out.name + ".rounds")
    log = lambda m: print(m, flush=True)  # noqa: E731
    run_chain(cfg, own.rounds, out, work, log=log, data_cache=args.data_cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())

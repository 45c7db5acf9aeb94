"""The one-command recipe: scripted data once, a base run, DAgger rounds that reuse the scripted records."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from app.sim.chain import Round, main, parse_round, round_config, run_chain
from app.sim.datagen import DataConfig, generate, scripted_part
from app.sim.depth_vq import VQTrainConfig
from app.sim.train import ModelShape, TrainConfig
from tests.app.sim.records import assert_same_records
from tests.checkpoints import TINY_MODEL

SMALL = ModelShape(llm_width=32, llm_layers=1, vit_width=32, vit_layers=3)
DATA = DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=5, workers=1, record_prob=1.0)


def test_a_round_appends_only_its_policy_episodes_to_the_scripted_records_and_gets_the_same_data():
    cfg = replace(DATA, policy=str(TINY_MODEL), policy_episodes=1, policy_steer_episodes=1, policy_steps=2)
    scripted = generate(scripted_part(cfg))
    assert scripted and {r.episode for r in scripted} == {0, 1}
    reused = generate(cfg, scripted=scripted)
    assert len(reused) > len(scripted) and reused[:len(scripted)] == scripted   # the same objects, not re-made
    assert_same_records(reused, generate(cfg))                                 # what the whole plan makes


def test_scripted_records_of_other_settings_are_refused():
    cfg = replace(DATA, policy=str(TINY_MODEL), policy_episodes=1, policy_steps=2)
    more = generate(replace(scripted_part(cfg), steer_episodes=3))
    with pytest.raises(ValueError, match="made with other settings"):
        generate(cfg, scripted=more)


def test_round_options_parse_and_bad_ones_are_refused():
    assert parse_round("40,60,1000") == Round(40, 60, 1000, 7e-4)
    assert parse_round("0,8,10,1e-3") == Round(0, 8, 10, 1e-3)
    for bad in ("40,60", "a,b,c", "0,0,10", "1,1,0", "1,1,5,-1", "-1,2,5"):
        with pytest.raises(Exception, match="--round"):
            parse_round(bad)


def test_the_chain_refuses_options_its_rounds_set(capsys, tmp_path):
    for flag in (["--init-from", "x"], ["--dagger-from", "x"], ["--train-seconds", "10"], ["--init", "x"],
                 ["--dagger-episodes=5"]):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "o"), *flag])
        assert "not a chain option" in capsys.readouterr().err


def test_a_round_continues_the_previous_checkpoint_on_its_episodes():
    base = TrainConfig(steps=5, lr=2e-3, data=DATA)
    cfg = round_config(base, TINY_MODEL, Round(3, 4, 7, 1e-3))
    assert (cfg.init_from, cfg.steps, cfg.lr) == (TINY_MODEL, 7, 1e-3)
    assert (cfg.data.policy, cfg.data.policy_episodes, cfg.data.policy_steer_episodes) == (str(TINY_MODEL), 3, 4)
    assert scripted_part(cfg.data) == DATA


@pytest.mark.slow
def test_a_chain_from_scratch_writes_the_last_rounds_checkpoint_and_its_timings(tmp_path):
    from model.checkpoint import load_checkpoint
    base = TrainConfig(steps=2, batch=4, shape=SMALL, vision_steps=2, data=DATA, vq=VQTrainConfig(steps=2, batch=4))
    rounds = [Round(1, 1, 2)]
    out, work = tmp_path / "final", tmp_path / "work"
    result = run_chain(base, rounds, out, work, log=lambda m: None)
    assert [s["stage"] for s in result["stages"]] == ["scripted data", "base", "round 1 data", "round 1"]
    scripted, base_run, round_data, last = result["stages"]
    assert round_data["records"] > scripted["records"] == base_run["records"]
    assert last["records"] == round_data["records"]
    stage_s = [s.get("s", s.get("total_s", 0)) for s in result["stages"]]
    assert result["total_s"] >= sum(stage_s) - 0.05 * len(stage_s)     # each figure is rounded to 0.1 s
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["init_from"]["path"] == str(work / "base") and training["dagger"]["from"] == str(work / "base")
    assert training["dagger"]["episodes"] == 1 and training["dagger"]["steer_episodes"] == 1
    assert json.loads((out / "chain_log.json").read_text())["total_s"] == result["total_s"]
    assert load_checkpoint(out).training["steps"] == 2

"""The bundled small MolmoAct (``assets/sim-molmoact``, trained by ``python -m app.sim.train``) is not random:
in a closed loop on the simulated cell its first waypoint sits on the gripper, its depth tokens decode to
the cell's depth, and a trace dragged onto another object turns its action toward that object, whether the
trace is forced as text (``steer_text``) or drawn on the image (``steer_visual``).

It also picks at least 60% of ten held-out episodes, run as ``app.sim.eval`` runs them (issue 7's pick target;
a strict xfail until the first DAgger round bundled on 2026-12-06 picked 9 of them; the second picks 9 too)."""
import json
from pathlib import Path

import numpy as np
import pytest

from app.sim.datagen import DataConfig, FRONT_SIZE
from app.sim.eval import HELD_OUT_BASE, depth_abs_rel, to_pixels
from app.sim.tasks import TASKS

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = ROOT / "assets" / "sim-molmoact"
# In the 640x480 front image; the model sees it at 168x168, so 1 px there is ~3.8 px here (25 px: ~7 px of
# the model's view). A random model's first waypoint is ~150 px off; the bundled one's median here is ~17 px.
FIRST_POINT_MEDIAN_PX = 25.0
FIRST_POINT_MAX_PX = 50.0
STEPS = 8
OTHER_PICKS = ("pick_yellow_ball", "pick_green_cylinder", "pick_blue_block")


@pytest.fixture(scope="module")
def station():
    from app.sim.eval import Evaluator
    ev = Evaluator(BUNDLED)
    yield ev
    ev.close()


def test_bundled_checkpoint_is_small_safetensors_and_says_how_it_was_made():
    files = sorted(p.name for p in BUNDLED.iterdir())
    assert not [f for f in files if f.endswith((".pt", ".bin", ".pth", ".pkl"))]
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 12 * 2 ** 20
    cfg = json.loads((BUNDLED / "config.json").read_text())
    assert cfg["training"]["script"] == "python -m app.sim.train"
    assert list(cfg["norm_stats"]) == ["sim"]


def test_the_station_defaults_to_the_bundled_model():
    import main
    from app.config import ModelConfig
    assert Path(ModelConfig().path) == BUNDLED
    assert main.parse_args([]).model_path == str(BUNDLED)


def _closed_loop(station, seed: int):
    """``STEPS`` closed-loop steps of pick_red_cube: first-waypoint errors (px), depth abs-rel, xy distance to
    the cube before and after."""
    decoder, cell = station.decoder, station.cell
    task = TASKS["pick_red_cube"]
    cell.reset(seed, task)
    w, h = FRONT_SIZE
    start = np.linalg.norm((cell.ee_pose().position - cell.object_position(task.target))[:2])
    errors, depth = [], []
    for _ in range(STEPS):
        obs, depth_m = station.observe(task.instruction)
        r = decoder.reason(obs)
        ee = cell.project(cell.ee_pose().position[None], w, h)[0]
        errors.append(float(np.linalg.norm(to_pixels(r.trace[:1], w, h)[0] - ee)))
        depth.append(depth_abs_rel(r.depth_map.relative, depth_m))
        assert len(r.depth_codes) == 100 and np.all(np.isfinite(r.action))
        station.send(r.action)
    end = np.linalg.norm((cell.ee_pose().position - cell.object_position(task.target))[:2])
    return errors, depth, start, end


def test_closed_loop_first_waypoint_follows_the_gripper(station):
    errors, depth, _, _ = _closed_loop(station, HELD_OUT_BASE + 17)
    assert np.median(errors) < FIRST_POINT_MEDIAN_PX and max(errors) < FIRST_POINT_MAX_PX, errors
    assert np.median(depth) < 0.2, depth          # its depth tokens decode to the cell's depth


def test_closed_loop_heads_for_the_named_object(station):
    """Scenes where the cube starts at least 10 cm from the TCP (horizontally), so that 3 cm of approach in
    ``STEPS`` steps can show: seed 18's cube starts 3.1 cm away, where only ending right over it would pass."""
    for seed in (HELD_OUT_BASE + 17, HELD_OUT_BASE + 19, HELD_OUT_BASE + 20):
        _, _, start, end = _closed_loop(station, seed)
        assert start >= 0.10, (seed, start)
        assert end < start - 0.03, (seed, start, end)


@pytest.mark.slow
def test_closed_loop_picks_at_least_60_percent_of_held_out_episodes(station):
    """The eval's first five held-out seeds of two pick tasks, run as ``app.sim.eval`` runs them."""
    picked = [station.run_reason(t, HELD_OUT_BASE + 1000 * list(TASKS).index(t) + k).success
              for t in ("pick_red_cube", "pick_blue_block") for k in range(5)]
    assert np.mean(picked) >= 0.6, picked


def _steering_cosines(station, mode: str) -> list[float]:
    """The same frame, the trace dragged onto each other object: cosine of the action's xy with the way there."""
    decoder, cell = station.decoder, station.cell
    out = []
    for seed in (HELD_OUT_BASE + 23, HELD_OUT_BASE + 24):
        cell.reset(seed, "pick_red_cube")
        obs, _ = station.observe("pick up the red cube")
        decoder.reason(obs)
        tcp = cell.ee_pose().position
        for target in OTHER_PICKS:
            trace = [tuple(map(int, p)) for p in TASKS[target].make_expert(cell, station.policy.expert).act().trace]
            goal = (cell.object_position(TASKS[target].target) - tcp)[:2]
            r = decoder.steer_text(trace) if mode == "steer_text" else decoder.steer_visual(obs, trace)
            move = r.action[:2]
            out.append(float(move @ goal / (np.linalg.norm(move) * np.linalg.norm(goal) + 1e-9)))
    return out


def test_dragged_trace_turns_the_action_toward_it_with_steer_text(station):
    cosines = _steering_cosines(station, "steer_text")
    assert min(cosines) > 0.7, cosines


def test_dragged_trace_turns_the_action_toward_it_with_steer_visual(station):
    cosines = _steering_cosines(station, "steer_visual")
    assert min(cosines) > 0.7, cosines


def test_the_training_commands_defaults_are_the_bundled_checkpoints_recipe():
    """``python -m app.sim.train`` with no options trains what ``assets/sim-molmoact`` was trained with."""
    from app.sim.scene import wrist_fovy_of
    from app.sim.train import IMAGE_SIDE, first_run, parse_command
    from model.checkpoint import load_checkpoint
    from model.grammar import GrammarTokens
    cfg, _ = parse_command([])
    bundled = load_checkpoint(BUNDLED)
    # a continued checkpoint (a DAgger round, README) records the run it continued, which may itself be a
    # continuation: the first run of the chain is the defaults'
    made = first_run(bundled.training)
    assert (made["seed"], made["steps"], made["batch"], made["lr"], made["vision_steps"], made["device"]) == \
        (cfg.seed, cfg.steps, cfg.batch, cfg.lr, cfg.vision_steps, cfg.device)
    assert (made["expert"], made["whole_number_tokens"], made["ordinal_sigma"]) == \
        (cfg.data.expert, cfg.whole_number_tokens, cfg.ordinal_sigma)
    # keys a checkpoint records since 2026-12-05 (third session); before, these were the only values
    assert (made.get("miss_prob", 0.0), tuple(made.get("mix", (0.45, 0.25, 0.3))), made.get("wrist_look_weight", 0.0),
            made.get("steer_miss_prob", 0.0), made.get("offset_weight", 0.0),
            tuple(made.get("miss_m", DataConfig.miss_m)), made.get("end_lost", False)) == \
        (cfg.data.miss_prob, cfg.mix, cfg.wrist_look_weight, cfg.data.steer_miss_prob, cfg.offset_weight,
         cfg.data.miss_m, cfg.data.end_lost)
    assert wrist_fovy_of(made) == cfg.data.wrist_fovy_deg
    # the precision a run used: "auto" is bf16 where the machine multiplies it natively, else fp32
    used = made.get("precision", "fp32")
    assert used == cfg.precision or (cfg.precision == "auto" and used in ("bf16", "fp32")), (used, cfg.precision)
    assert bundled.cameras == (("front", "wrist") if cfg.data.wrist else ("front",))
    gt = GrammarTokens(bundled.tokenizer)
    assert (gt.number_ids is not None) == cfg.whole_number_tokens
    lo = bundled.tokenizer.action_base_id - 256
    assert (bundled.tokenizer.encode(bundled.tokenizer.id_to_token(lo + 7)) == [lo + 7]) == cfg.whole_action_tokens
    assert json.loads((BUNDLED / "preprocessor_config.json").read_text())["base_image_input_size"] == [IMAGE_SIDE] * 2

"""The evaluation's measures (the benchmark itself runs with ``python -m app.sim.eval``)."""
import numpy as np
import pytest

from app.sim.eval import (EpisodeResult, _jobs, depth_abs_rel, main, pick_other, summarize, to_pixels,
                          trace_distance_px)
from app.sim.tasks import TASKS
from tests.pools import die_as_if_killed_for_memory
from dataclasses import asdict


def test_trace_distance_is_zero_for_the_same_path_and_in_pixels():
    t = [(0, 0), (255, 0)]
    assert trace_distance_px(t, [(0, 0), (128, 0), (255, 0)], 640, 480) == pytest.approx(0.0, abs=1e-9)
    # shifted down by 255 model units = the full height (479 px)
    assert trace_distance_px(t, [(0, 255), (255, 255)], 640, 480) == pytest.approx(479.0)
    np.testing.assert_allclose(to_pixels([(255, 255)], 640, 480), [[639, 479]])


def test_depth_abs_rel_zero_for_truth_and_ignores_the_backdrop():
    from app.sim.datagen import inverse_depth
    depth = np.full((480, 640), 1.25, np.float32)
    depth[:100] = 8.0                                     # far backdrop: left out
    truth = inverse_depth(depth, 80).astype(np.float32)
    pred = truth.copy()
    pred[:16] = 0.01                                      # wildly wrong, but only on the backdrop rows
    assert depth_abs_rel(pred, depth) == pytest.approx(0.0, abs=1e-3)
    assert depth_abs_rel(truth * 0.5, depth) == pytest.approx(1.0, rel=1e-2)   # half the inverse = twice as far


def test_summary_rates_and_medians():
    rows = [EpisodeResult("pick_red_cube", 1, "reason", success=True, trace_errors=[2.0, 4.0], reason_ms=[100.0]),
            EpisodeResult("pick_red_cube", 2, "reason", success=False, trace_errors=[6.0], reason_ms=[300.0]),
            EpisodeResult("pick_red_cube", 1, "steer_text", success=True, success_xy=True, steer_ms=[10.0],
                          reason_ms=[200.0]),
            EpisodeResult("pick_red_cube", 1, "steer_visual", success=False, steer_ms=[40.0])]
    s = summarize([asdict(r) for r in rows])
    assert s["success_rate"] == 0.5 and s["per_task"] == {"pick_red_cube": 0.5}
    assert s["steering_compliance_text"] == 1.0 and s["steering_compliance_visual"] == 0.0
    assert s["trace_error_px"] == 4.0 and s["reason_ms"] == 200.0 and s["steer_text_ms"] == 10.0
    for key in ("success_rate", "steering_compliance_visual", "steering_compliance_text", "trace_error_px",
                "depth_abs_rel", "reason_ms", "steer_text_ms"):
        assert key in s


def test_held_out_seeds_and_other_targets():
    jobs = _jobs(list(TASKS), 2, steer=True)
    assert min(seed for _, seed, _ in jobs) >= 100_000
    assert {m for _, _, m in jobs} == {"reason", "steer_text", "steer_visual"}
    assert all(TASKS[t].kind == "pick" for t, _, m in jobs if m != "reason")
    for t, seed, _ in jobs:
        if TASKS[t].kind == "pick":
            assert TASKS[pick_other(t, seed)].target != TASKS[t].target


def test_cli_refuses_a_missing_checkpoint_and_unknown_task(tmp_path, capsys):
    assert main(["--model.path", str(tmp_path / "nope"), "--episodes", "1"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--tasks", "fly_away", "--episodes", "1"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_threads_per_worker_reach_the_rollouts_and_a_bad_count_is_refused(tmp_path, monkeypatch, capsys):
    import app.sim.eval as ev
    seen = []

    class Stop(Exception):
        pass

    def fake_run_jobs(args):
        seen.append(args[3])
        raise Stop

    monkeypatch.setattr(ev, "_run_jobs", fake_run_jobs)
    for threads in (None, 1, 3):
        with pytest.raises(Stop):
            ev.evaluate(tmp_path, 1, ["pick_red_cube"], workers=1, threads=threads)
    assert seen == [2, 1, 3]
    with pytest.raises(ValueError, match="at least 1"):
        ev.evaluate(tmp_path, 1, ["pick_red_cube"], workers=1, threads=0)
    assert main(["--threads", "0", "--episodes", "1"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_an_object_knocked_off_the_table_is_seen_as_such(cell):
    """The closed loop stops there (a failure): the expert's trace to an object behind the camera is NaN."""
    from app.sim.eval import off_table
    from app.sim.gl import mujoco
    cell.reset(0, "pick_green_cylinder")
    assert not off_table(cell, "green_cylinder")
    adr = cell.model.joint("green_cylinder_free").qposadr[0]
    cell.data.qpos[adr:adr + 3] = [1.5, 0.0, -0.7]           # on the floor, behind the front camera
    mujoco.mj_forward(cell.model, cell.data)
    assert off_table(cell, "green_cylinder") and not off_table(cell, "red_cube")


def test_a_killed_eval_worker_is_an_error_not_a_hang(tmp_path, monkeypatch):
    import app.sim.eval as ev
    monkeypatch.setattr(ev, "_run_jobs", die_as_if_killed_for_memory)
    with pytest.raises(RuntimeError, match="an eval worker process died"):
        ev.evaluate(tmp_path, 1, ["pick_red_cube"], workers=2)

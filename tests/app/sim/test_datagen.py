"""The training data: what the model is shown must be what the decoder shows it at run time."""
from dataclasses import replace

import numpy as np
import pytest

from app.sim.datagen import (FRONT_SIZE, LOCATED, DataConfig, drawn_pixels, episode_plan, inverse_depth, model_pixels,
                             run_episode)
from app.sim.tasks import TASKS
from tests.app.sim.records import assert_same_records
from tests.pools import die_as_if_killed_for_memory


@pytest.fixture(scope="module")
def front_cell():
    from app.sim.cell import SimCell, SimConfig
    c = SimCell(SimConfig(front_size=FRONT_SIZE))
    yield c
    c.close()


def test_stored_pixels_are_the_processors_view(front_cell):
    """crops from the stored uint8 image == the runtime processor's crops of the same frame."""
    from app.sim.train import IMAGE_SIDE, crops_of, preprocessor_config
    from model.decoder import resize_for_model
    from model.image_processing import ImageProcessingConfig, ImageTokenIds, preprocess_images
    front_cell.reset(3, "pick_red_cube")
    rgb, _, _ = front_cell.render("front", *FRONT_SIZE)
    stored = model_pixels(rgb, IMAGE_SIDE)
    cfg = ImageProcessingConfig.from_preprocessor_config(preprocessor_config())
    pre = preprocess_images([resize_for_model(rgb, (256, 256))], cfg, ImageTokenIds(1, 2, 3, 4))
    np.testing.assert_array_equal(crops_of(stored[None]).numpy(), pre.crops)


def test_drawn_view_differs_only_along_the_trace(front_cell):
    front_cell.reset(3, "pick_red_cube")
    rgb, _, _ = front_cell.render("front", *FRONT_SIZE)
    plain = model_pixels(rgb, 168)
    drawn = drawn_pixels(rgb, np.array([[20, 200], [230, 200]]), 168)
    changed = np.any(plain != drawn, axis=2)
    rows = np.nonzero(changed.any(axis=1))[0]
    assert changed.sum() > 100                       # a visible line
    assert rows.min() >= 125 and rows.max() <= 140   # y = 200/255 of 168 px ≈ 131: only around it


def test_inverse_depth_keeps_invalid_as_zero():
    d = np.full((48, 64), 2.0, np.float32)
    d[:, :32] = 0.0
    inv = inverse_depth(d, 8)
    assert inv.shape == (8, 8)
    np.testing.assert_allclose(inv[:, 4:].astype(np.float32), 0.5, rtol=1e-3)
    assert np.all(inv[:, :4] == 0)


def test_episode_records_labels_and_determinism(front_cell):
    cfg = DataConfig(max_steps=12, alt_prob=1.0, record_prob=1.0)
    a = run_episode(front_cell, 11, "pick_red_cube", None, cfg, episode=0)
    b = run_episode(front_cell, 11, "pick_red_cube", None, cfg, episode=0)
    assert len(a) == 12
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.image, rb.image)
        np.testing.assert_array_equal(ra.own_action, rb.own_action)
    first = a[0]
    assert first.instruction == TASKS["pick_red_cube"].instruction and not first.steer_episode
    # the expert's trace starts at the TCP; the alt trace is another object's, from the same TCP
    np.testing.assert_array_equal(first.own_trace[0], first.ee_model)
    np.testing.assert_array_equal(first.alt_trace[0], first.ee_model)
    assert not np.array_equal(first.alt_trace[-1], first.own_trace[-1])
    assert all(np.all((r.own_trace >= 0) & (r.own_trace <= 255)) for r in a)
    assert all(np.all(np.isfinite(r.own_action)) and r.own_action.shape == (7,) for r in a)
    # the located objects are where the image shows them: the red cube's point is red in the model's view
    assert first.objects_model.shape == (len(LOCATED), 2)
    x, y = np.rint(first.objects_model[LOCATED.index("red_cube")] / 255 * (first.image.shape[0] - 1)).astype(int)
    r, g, bl = first.image[y, x].astype(int)
    assert r > 120 and r > 2 * g and r > 2 * bl, first.image[y, x]


def test_record_prob_keeps_a_share_of_the_steps(front_cell):
    every = run_episode(front_cell, 3, "pick_yellow_ball", None, DataConfig(max_steps=30, record_prob=1.0), 0)
    half = run_episode(front_cell, 3, "pick_yellow_ball", None, DataConfig(max_steps=30, record_prob=0.5), 0)
    again = run_episode(front_cell, 3, "pick_yellow_ball", None, DataConfig(max_steps=30, record_prob=0.5), 0)
    assert len(every) == 30
    assert 5 <= len(half) <= 25 and len(again) == len(half)
    for ra, rb in zip(half, again):
        np.testing.assert_array_equal(ra.image, rb.image)


def test_steer_episode_executes_another_objects_expert(front_cell):
    cfg = DataConfig(max_steps=40, alt_prob=0.0)
    recs = run_episode(front_cell, 5, "pick_red_cube", "pick_yellow_ball", cfg, episode=0)
    assert all(r.steer_episode and r.instruction == "pick up the red cube" for r in recs)
    ball, cube = front_cell.object_position("yellow_ball"), front_cell.object_position("red_cube")
    tcp = front_cell.ee_pose().position
    assert np.linalg.norm(tcp - ball) < np.linalg.norm(tcp - cube)


def test_plan_has_held_out_free_seeds_and_steer_pairs():
    plan = episode_plan(DataConfig(episodes_per_task=2, steer_episodes=5))
    assert len(plan) == 2 * len(TASKS) + 5
    assert len({s for s, _, _ in plan}) == len(plan)
    assert max(s for s, _, _ in plan) < 100_000                 # the eval's held-out seeds are far above
    for _, task, executed in plan[-5:]:
        assert executed is not None and TASKS[executed].target != TASKS[task].target


def test_wrist_view_is_recorded_with_where_the_objects_are_in_it(front_cell):
    """The wrist image is the processor's view of the wrist camera; the target, right below the fingers
    at the grasp, is where its projected point says (red there), and things out of view are NaN."""
    from app.sim.datagen import WRIST_SIZE, in_view
    recs = run_episode(front_cell, 11, "pick_red_cube", None, DataConfig(max_steps=40, record_prob=1.0, wrist=True), 0)
    assert all(r.wrist.shape == (168, 168, 3) and r.wrist.dtype == np.uint8 for r in recs)
    assert all(r.wrist_objects.shape == (len(LOCATED), 2) for r in recs)
    near = next(r for r in recs if r.own_action[6] > 0.5)           # the expert closes: the cube is in the hand
    where = near.wrist_objects[LOCATED.index("red_cube")]
    assert 100 < where[0] < 156 and 128 < where[1] < 230, where     # between the fingers, lower middle
    x, y = np.rint(where / 255 * 167).astype(int)
    r, g, b = near.wrist[y, x].astype(int)
    assert r > 80 and r > 2 * g and r > 2 * b, near.wrist[y, x]
    assert any(np.isnan(r.wrist_objects).any() for r in recs)      # something is always out of this view
    np.testing.assert_array_equal(in_view(np.array([[-1.0, 5.0], [10.0, np.nan], [319.0, 239.0]]), *WRIST_SIZE)[2],
                                  [255.0, 255.0])
    assert np.isnan(in_view(np.array([[-1.0, 5.0], [10.0, np.nan]]), *WRIST_SIZE)).all()


def test_a_missed_grasp_is_labelled_by_the_expert_and_recovered_from(front_cell):
    """With ``miss_prob`` 1 the executed policy closes beside the cube first; the labels are the expert's
    from each state (never "close here"), the expert then reopens, and the cube still ends up lifted."""
    from app.sim.datagen import BesideExpert
    cfg = DataConfig(max_steps=90, record_prob=1.0, miss_prob=1.0, noise_m=0.0)
    recs = run_episode(front_cell, 11, "pick_red_cube", None, cfg, 0)
    assert TASKS["pick_red_cube"].success(front_cell)
    grip = np.array([r.own_action[6] for r in recs])
    # one "close" label, the real grasp's: the miss is executed, never taught
    assert grip[0] == 0.0 and len(np.flatnonzero(np.diff(grip) > 0.5)) == 1 and np.all(np.diff(grip) >= 0)
    plain = run_episode(front_cell, 11, "pick_red_cube", None, replace(cfg, miss_prob=0.0), 0)
    assert len(recs) > len(plain) + 5                      # the detour and the recovery take steps
    b = BesideExpert(TASKS["pick_red_cube"], front_cell, offset=np.array([0.03, 0.0, 0.0]))
    front_cell.reset(11, "pick_red_cube")
    plan = b.plan()
    assert len(plan) == 3 and plan[-1].gripper == 1.0
    np.testing.assert_allclose(plan[1].position[:2], front_cell.object_position("red_cube")[:2] + [0.03, 0.0])


def test_a_missed_grasp_with_the_servo_expert_is_labelled_by_its_law_and_recovered_from(front_cell):
    """The bundled recipe's expert: in the states beside the object that the miss visits, low with the fingers
    open, the law's label climbs back toward the funnel (never "descend here"), and the cube ends up lifted."""
    cfg = DataConfig(max_steps=90, record_prob=1.0, miss_prob=1.0, noise_m=0.0, expert="servo")
    recs = run_episode(front_cell, 11, "pick_red_cube", None, cfg, 0)
    assert TASKS["pick_red_cube"].success(front_cell)
    assert recs[0].own_action[6] == 0.0
    # replay the miss and read the law where the hand is low beside the cube with its fingers open
    assert climbs_beside(front_cell, 11, "pick_red_cube", "pick_red_cube", np.array([0.0, 0.035, 0.0])) >= 3


def test_a_wide_miss_visits_low_states_far_beside_the_object_labelled_toward_it(front_cell):
    """``miss_m`` sets how far beside the object the miss closes. At 7-8 cm (the bundled model's failed picks
    stop 5-9 cm beside the object and press there) the records hold low states that far beside the cube, and
    each one's label moves toward the cube, horizontally, with the fingers open; the cube still ends lifted."""
    cfg = DataConfig(max_steps=90, record_prob=1.0, miss_prob=1.0, noise_m=0.0, expert="servo", miss_m=(0.07, 0.08))
    recs = run_episode(front_cell, 11, "pick_red_cube", None, cfg, 0)
    assert TASKS["pick_red_cube"].success(front_cell)
    cube = LOCATED.index("red_cube")

    def low_far_beside(r) -> bool:
        return (0.06 < np.hypot(*(r.tcp_m[:2] - r.objects_m[cube][:2])) < 0.09
                and r.tcp_m[2] < r.objects_m[cube][2] + 0.08)

    far_low = [r for r in recs if low_far_beside(r)]
    assert len(far_low) >= 3
    for r in far_low:
        to_cube = r.objects_m[cube][:2] - r.tcp_m[:2]
        xy = r.own_action[:2]
        assert xy @ to_cube > 0.7 * np.linalg.norm(xy) * np.linalg.norm(to_cube) and r.own_action[6] == 0.0
    narrow = run_episode(front_cell, 11, "pick_red_cube", None, replace(cfg, miss_m=(0.02, 0.03)), 0)
    assert not any(low_far_beside(r) for r in narrow)


def climbs_beside(cell, seed: int, layout: str, missed: str, offset: np.ndarray) -> int:
    """Replay a miss ``offset`` beside ``missed``'s object on ``layout``'s scene; wherever the hand is low (more
    than 2.5 cm) beside it with the fingers open, ``missed``'s servo law must say climb with the fingers open.
    Returns how many such states the miss visited."""
    from app.sim.datagen import BesideExpert
    from app.sim.tasks import ServoPickExpert
    task = TASKS[missed]
    cell.reset(seed, layout)
    miss = BesideExpert(task, cell, offset=offset)
    climbs = 0
    for _ in range(40):
        step = miss.act()
        p, obj = cell.ee_pose().position, cell.object_position(task.target)
        label = ServoPickExpert(task, cell).act()
        if np.hypot(*(p[:2] - obj[:2])) > 0.025 and p[2] < 0.06 and cell.gripper_command < 0.5:
            assert label.action[2] > 0 and label.action[6] == 0.0
            climbs += 1
        if step.done:
            break
        cell.step(step.action)
    return climbs


def test_a_steer_episode_can_miss_beside_the_traced_object_and_is_labelled_by_its_expert(front_cell):
    """``steer_miss_prob``: instructed to pick the red cube, the executed policy goes for the blue block
    (the dragged trace's object), closes beside it first, then its expert picks it. Every label is the blue
    block's expert (low beside the block with the fingers open: climb), the instruction stays the red cube's,
    and ``miss_prob`` alone leaves steer episodes as they were."""
    cfg = DataConfig(max_steps=90, record_prob=1.0, noise_m=0.0, expert="servo")
    missed = run_episode(front_cell, 11, "pick_red_cube", "pick_blue_block", replace(cfg, steer_miss_prob=1.0), 0)
    assert TASKS["pick_blue_block"].success(front_cell) and not TASKS["pick_red_cube"].success(front_cell)
    assert all(r.steer_episode and r.instruction == TASKS["pick_red_cube"].instruction for r in missed)
    grip = np.array([r.own_action[6] for r in missed])
    assert grip[0] == 0.0 and len(np.flatnonzero(np.diff(grip) > 0.5)) == 1    # the miss's close is never taught
    plain = run_episode(front_cell, 11, "pick_red_cube", "pick_blue_block", cfg, 0)
    assert len(missed) > len(plain) + 5
    only_clean = run_episode(front_cell, 11, "pick_red_cube", "pick_blue_block", replace(cfg, miss_prob=1.0), 0)
    assert len(only_clean) == len(plain)
    for a, b in zip(only_clean, plain):
        np.testing.assert_array_equal(a.own_action, b.own_action)
    # the states the miss visits beside the block get the block's law: climb back toward its funnel
    assert climbs_beside(front_cell, 11, "pick_red_cube", "pick_blue_block", np.array([0.0, -0.035, 0.0])) >= 3


def test_a_trace_through_a_point_behind_the_front_camera_is_not_traceable(front_cell):
    """An object knocked off the table toward the front camera projects to NaN, which the int trace holds as
    (-1, -1) (a steer-miss episode once crashed the data generation on it): such a state is not recorded and its
    episode ends."""
    from app.sim.datagen import traceable
    front_cell.reset(3, "pick_red_cube")
    w, h = FRONT_SIZE
    on_table = front_cell.to_model_space(front_cell.project(np.array([[0.5, 0.0, 0.02], [0.4, 0.1, 0.2]]), w, h), w, h)
    behind = front_cell.to_model_space(front_cell.project(np.array([[0.5, 0.0, 0.02], [1.6, 0.0, 0.5]]), w, h), w, h)
    assert traceable(on_table) and not traceable(behind)
    assert behind[1].tolist() == [-1, -1] and (behind[0] >= 0).all()


def test_an_episode_ends_when_an_object_is_lost_with_end_lost(front_cell):
    """Episode 389 of the bundled recipe's data: the green cylinder is knocked over, rolls out of the front
    camera's view and falls off the table, and its expert chases it to the workspace's edge, where the traces
    run along the image's border. With ``end_lost`` the episode ends as the cylinder is lost: every record
    has all objects on the table and no trace on the border, and the records before are the same."""
    from app.sim.datagen import FALLEN_Z_M, lost, on_border
    cfg = DataConfig(expert="servo", miss_prob=0.3, steer_miss_prob=0.3)
    kept = run_episode(front_cell, 389, "pick_green_cylinder", None, cfg, 389)
    assert front_cell.object_position("green_cylinder")[2] < FALLEN_Z_M
    assert sum(on_border(r.own_trace) for r in kept) >= 10
    ended = run_episode(front_cell, 389, "pick_green_cylinder", None, replace(cfg, end_lost=True), 389)
    assert 0 < len(ended) < len(kept)
    assert all(r.objects_m[:, 2].min() >= FALLEN_Z_M and not on_border(r.own_trace) for r in ended)
    assert all(r.alt_trace is None or not on_border(r.alt_trace) for r in ended)
    for a, b in zip(ended, kept):
        np.testing.assert_array_equal(a.own_action, b.own_action)
    # a plain scene has nothing lost; a trace clamped onto any border is
    front_cell.reset(3, "pick_red_cube")
    inside = np.array([[127, 38], [140, 120], [150, 140]])
    assert not lost(front_cell, inside)
    for edge in ([0, 50], [50, 0], [255, 50], [50, 255]):
        assert on_border(np.vstack([inside, edge])) and lost(front_cell, np.vstack([inside, edge]))


class DownAndClosedPolicy:
    """Stands in for a checkpoint in the DAgger data path: a fixed command whatever it sees (sinks
    straight down with the fingers closed, which no scripted episode does)."""

    def act(self, cell, instruction: str) -> np.ndarray:
        return np.array([0.0, 0.0, -0.02, 0.0, 0.0, 0.0, 1.0])


def test_a_policy_episode_executes_the_policy_and_labels_each_state_with_the_state_expert(front_cell):
    from app.sim.datagen import run_policy_episode
    from app.sim.tasks import StateExpert
    cfg = DataConfig(record_prob=1.0, policy_steps=6)
    front_cell.reset(21, "pick_blue_block")
    start = front_cell.ee_pose().position
    recs = run_policy_episode(front_cell, 21, "pick_blue_block", cfg, 7, DownAndClosedPolicy())
    assert len(recs) == 6 and all(r.episode == 7 and not r.steer_episode for r in recs)
    moved = front_cell.ee_pose().position - start
    assert moved[2] < -0.08 and np.hypot(*moved[:2]) < 0.01          # the policy's motion, not the expert's
    assert front_cell.gripper_measured > 0.5
    # the labels: from a hand closed on nothing, open and go to the approach point
    assert all(r.own_action[6] == 0.0 for r in recs[1:])
    expert = StateExpert(TASKS["pick_blue_block"], front_cell)
    again, approach = expert.act(), expert.waypoints[0].position
    to_approach = approach - front_cell.ee_pose().position
    assert again.action[6] == 0.0 and approach[2] > front_cell.object_position("blue_block")[2] + 0.1
    assert again.action[:3] @ to_approach / np.linalg.norm(again.action[:3]) / np.linalg.norm(to_approach) > 0.99


class SteeredDownPolicy:
    """Stands in for a checkpoint steered by a dragged trace: notes what it was asked, then sinks with the
    fingers open whatever the trace says (or answers NaN once ``nan_after`` calls are used up)."""

    def __init__(self, nan_after: int | None = None) -> None:
        self.calls: list[tuple[str, list[tuple[int, int]], str]] = []
        self.nan_after = nan_after

    def steer(self, cell, instruction: str, trace, mode: str) -> np.ndarray:
        self.calls.append((instruction, list(trace), mode))
        if self.nan_after is not None and len(self.calls) > self.nan_after:
            return np.full(7, np.nan)
        return np.array([0.0, 0.0, -0.02, 0.0, 0.0, 0.0, 0.0])


def test_a_steered_policy_episode_drags_the_trace_onto_another_object_and_labels_with_its_expert(front_cell):
    """DAgger for steering: instructed to pick A, the policy gets B's expert trace every step (as the
    eval's operator drags it), its own motion is executed, and each state is a steer record labelled by
    B's expert from that state."""
    from app.sim.datagen import STEER_MODES, run_policy_steer_episode
    cfg = DataConfig(record_prob=1.0, policy_steps=5, expert="servo")
    policy = SteeredDownPolicy()
    front_cell.reset(21, "pick_blue_block")
    start = front_cell.ee_pose().position
    recs = run_policy_steer_episode(front_cell, 21, "pick_blue_block", cfg, 9, policy)
    assert len(recs) == 5 and len(policy.calls) == 5
    target = recs[0].own_target
    assert target != TASKS["pick_blue_block"].target and all(r.own_target == target for r in recs)
    assert all(r.steer_episode and r.task == "pick_blue_block" and r.episode == 9 for r in recs)
    assert {m for _, _, m in policy.calls} <= set(STEER_MODES) and len({m for _, _, m in policy.calls}) == 1
    assert all(i == TASKS["pick_blue_block"].instruction for i, _, _ in policy.calls)
    for rec, (_, trace, _) in zip(recs, policy.calls):     # the dragged trace is the label's trace
        assert rec.own_trace.tolist() == [list(p) for p in trace]
    moved = front_cell.ee_pose().position - start
    assert moved[2] < -0.06 and np.hypot(*moved[:2]) < 0.01          # the policy's motion, not the expert's
    b_task = next(t for t in TASKS.values() if t.kind == "pick" and t.target == target)
    label = b_task.make_expert(front_cell, "servo").act()             # B's expert from where it ended
    assert np.linalg.norm(label.action[:2]) > 0.005                   # ... would have gone sideways to B
    # the same seed gives the same B and mode; an answer it cannot act on ends it, keeping what it labelled
    again = SteeredDownPolicy(nan_after=1)
    recs2 = run_policy_steer_episode(front_cell, 21, "pick_blue_block", cfg, 9, again)
    assert len(recs2) == 2 and recs2[0].own_target == target and again.calls[0][2] == policy.calls[0][2]
    np.testing.assert_array_equal(recs2[0].own_action, recs[0].own_action)


def test_the_steered_dagger_episodes_come_after_the_pick_ones_with_seeds_of_their_own():
    from app.sim.datagen import PICK_TASKS, POLICY, POLICY_STEER
    cfg = DataConfig(episodes_per_task=1, steer_episodes=2, policy="x", policy_episodes=3, policy_steer_episodes=8)
    plan = episode_plan(cfg)
    assert [e for _, _, e in plan[-11:]] == [POLICY] * 3 + [POLICY_STEER] * 8
    assert len({s for s, _, _ in plan}) == len(plan) and max(s for s, _, _ in plan) < 100_000
    assert {t for _, t, _ in plan[-8:]} == set(PICK_TASKS)


@pytest.mark.slow
def test_the_bundled_model_drives_policy_episodes_in_the_generated_data():
    """The real path: ``DataConfig.policy`` names a checkpoint, ``generate`` loads it in its worker and
    adds its episodes (seeds apart from the scripted ones) after the scripted ones."""
    from app.config import DEFAULT_MODEL_PATH
    from app.sim.datagen import POLICY, POLICY_STEER, ModelPolicy, generate
    policy = ModelPolicy(DEFAULT_MODEL_PATH)
    # the data renders the wrist camera the bundled model saw (generate refuses another, tested in test_train)
    cfg = DataConfig(episodes_per_task=0, steer_episodes=1, max_steps=4, record_prob=1.0, workers=1,
                     policy=str(DEFAULT_MODEL_PATH), policy_episodes=2, policy_steer_episodes=2, policy_steps=3,
                     wrist=True, expert="servo", wrist_fovy_deg=policy.wrist_fovy_deg)
    plan = episode_plan(cfg)
    assert [e for _, _, e in plan[-4:]] == [POLICY, POLICY, POLICY_STEER, POLICY_STEER]
    recs = generate(cfg)
    by_episode = [[r for r in recs if r.episode == e] for e in range(5)]
    assert len(by_episode[0]) == 4 and all(0 < len(rs) <= 3 for rs in by_episode[1:])
    assert not any(r.steer_episode for rs in by_episode[1:3] for r in rs)
    assert all(r.steer_episode and r.own_target != TASKS[r.task].target for rs in by_episode[3:] for r in rs)
    with pytest.raises(ValueError, match="unknown steering mode 'steer_audio'"):
        policy.steered(None, [(10, 10)], "steer_audio")
    assert {r.task for rs in by_episode[1:] for r in rs} <= set(TASKS) and all(
        r.own_trace.shape[1] == 2 for rs in by_episode[1:] for r in rs)


class MalformedPolicy:
    """A checkpoint whose answer cannot be parsed (the decoder raises a ValueError subclass)."""

    def act(self, cell, instruction: str) -> np.ndarray:
        from model.grammar import AnswerParseError
        raise AnswerParseError("no action in the answer")


class NonFiniteLogitsPolicy:
    """A checkpoint whose logits went NaN (the decoder raises a RuntimeError, not a ValueError)."""

    def act(self, cell, instruction: str) -> np.ndarray:
        from model.decoder import NonFiniteLogitsError
        raise NonFiniteLogitsError("NaN logits at the first action token")


class NaNPolicy:
    def act(self, cell, instruction: str) -> np.ndarray:
        return np.full(7, np.nan)


@pytest.mark.parametrize("policy", [MalformedPolicy(), NonFiniteLogitsPolicy(), NaNPolicy()])
def test_a_policy_episode_ends_on_an_answer_it_cannot_act_on_and_keeps_what_it_labelled(front_cell, policy):
    from app.sim.datagen import run_policy_episode
    front_cell.reset(21, "pick_blue_block")
    start = front_cell.ee_pose().position
    recs = run_policy_episode(front_cell, 21, "pick_blue_block", DataConfig(record_prob=1.0), 0, policy)
    assert len(recs) == 1 and np.all(np.isfinite(recs[0].own_action))
    np.testing.assert_allclose(front_cell.ee_pose().position, start, atol=1e-3)    # nothing was sent


@pytest.mark.parametrize("cameras", [["front", "top"], ["wrist", "front"]])
def test_a_checkpoint_wanting_cameras_the_sim_cell_lacks_is_refused(tmp_path, cameras):
    """The eval and the DAgger episodes feed the sim's front (first) and wrist cameras; anything else is a
    clear error naming what the checkpoint wants, not a render of a camera that does not exist."""
    from app.sim.datagen import ModelPolicy
    from tests.checkpoints import tiny_with_cameras
    with pytest.raises(ValueError, match="the sim cell has the cameras"):
        ModelPolicy(tiny_with_cameras(tmp_path, cameras))


def test_the_servo_expert_drives_and_labels_the_episodes_when_chosen(front_cell):
    from app.sim.datagen import run_policy_episode
    from app.sim.tasks import Expert, ServoPickExpert
    task = TASKS["pick_yellow_ball"]
    front_cell.reset(3, task)
    servo, script = ServoPickExpert(task, front_cell).act(), Expert(task, front_cell).act()
    assert servo.trace.tolist() != script.trace.tolist()
    cfg = DataConfig(max_steps=60, record_prob=1.0, noise_m=0.0, expert="servo")
    recs = run_episode(front_cell, 3, "pick_yellow_ball", None, cfg, 0)
    assert recs[0].own_trace.tolist() == servo.trace.tolist()
    np.testing.assert_allclose(recs[0].own_action, servo.action)
    assert task.success(front_cell)
    # DAgger labels come from it too: from a hand closed on nothing, open and rise straight up
    front_cell.reset(21, "pick_blue_block")
    recs = run_policy_episode(front_cell, 21, "pick_blue_block", replace(cfg, policy_steps=6), 0,
                              DownAndClosedPolicy())
    assert all(r.own_action[6] == 0.0 and r.own_action[2] > 0.01 and np.abs(r.own_action[:2]).max() < 1e-9
               for r in recs[2:])


def test_generating_in_this_process_keeps_its_torch_threads():
    """With one worker the episodes run here; the one-thread setting is the pool workers' alone (a training run
    with ``--workers 1`` trained on one core)."""
    import torch
    from app.sim.datagen import generate
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        records = generate(DataConfig(episodes_per_task=0, steer_episodes=1, max_steps=3, record_prob=1.0, workers=1))
        assert len(records) == 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_pool_workers_give_the_records_one_process_gives(monkeypatch):
    """Chunks of one episode over two processes (each keeps its cell between chunks): the same records, in the
    same order, as the episodes run here one after another on one torch thread, as a pool worker runs (on more
    threads the processor's resize rounds a few pixels the other way)."""
    import torch
    from app.sim import datagen
    cfg = DataConfig(episodes_per_task=0, steer_episodes=3, max_steps=3, record_prob=1.0, workers=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = datagen.generate(cfg)
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(datagen, "CHUNK_EPISODES", 1)
    pooled = datagen.generate(replace(cfg, workers=2))
    assert [r.episode for r in here] == [r.episode for r in pooled] == [0] * 3 + [1] * 3 + [2] * 3
    assert_same_records(here, pooled)


def test_a_killed_data_worker_is_an_error_not_a_hang(monkeypatch):
    """A worker killed for memory once left ``multiprocessing.Pool.map`` waiting forever (55 minutes of a
    DAgger run, nothing saved); now ``generate`` raises and says what to change."""
    from app.sim import datagen
    monkeypatch.setattr(datagen, "_pool_worker", die_as_if_killed_for_memory)
    cfg = DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=3, record_prob=1.0, workers=2)
    with pytest.raises(RuntimeError, match="a data worker process died.*fewer --workers"):
        datagen.generate(cfg)


def test_a_pool_worker_loads_the_dagger_checkpoint_at_its_first_chunk_that_needs_it(monkeypatch):
    """A worker's first chunk may be all scripted episodes: the checkpoint is loaded by a later chunk with DAgger
    episodes (it once stayed None, and the run failed at its first DAgger episode)."""
    from app.config import DEFAULT_MODEL_PATH
    from app.sim import datagen
    policy = datagen.ModelPolicy(DEFAULT_MODEL_PATH)
    cfg = DataConfig(episodes_per_task=0, steer_episodes=1, max_steps=3, record_prob=1.0, workers=2,
                     policy=str(DEFAULT_MODEL_PATH), policy_episodes=1, policy_steer_episodes=0, policy_steps=2,
                     wrist=True, expert="servo", wrist_fovy_deg=policy.wrist_fovy_deg)
    plan = list(enumerate(episode_plan(cfg)))
    assert [job[2] for _, job in plan][-1] == datagen.POLICY and datagen.POLICY not in plan[0][1]
    monkeypatch.setattr(datagen, "_RESIDENT", {})
    try:
        scripted = datagen._pool_worker((cfg, plan[:1]))
        assert datagen._RESIDENT["policy"] is None and len(scripted) == 3
        driven = datagen._pool_worker((cfg, plan[1:]))
        assert isinstance(datagen._RESIDENT["policy"], datagen.ModelPolicy)
        assert 0 < len(driven) <= 2 and all(r.episode == 1 for r in driven)
    finally:
        datagen._RESIDENT["cell"].close()

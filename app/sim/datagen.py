"""Training data for the bundled sim model: scripted-expert episodes of the simulated cell.

A random half of the control steps (``record_prob``: more layouts for the same number of records)
each yield one ``StepRecord``: the model's view of the front camera (resized exactly as
the decoder resizes it, so training sees the pixels inference sees), the inverse depth for the depth
VQ-VAE, and three (trace, action) labels:

* ``own``: what the episode's policy does from here (the instruction's expert, or in a *steer episode*
  another object's expert that the instruction does not name: the operator dragged the trace there);
* ``alt``: the pick expert of another object, planned fresh from this state (a trace that is not the
  instruction's, and the action that follows that trace);
* ``drawn``: the front image with ``own`` or ``alt`` drawn on it as ``steer_visual`` draws it.

With ``wrist`` each record also holds the wrist camera's view, MolmoAct's second image
(as in the reference's LIBERO setup: the trace is drawn and predicted on the first image only), and
where the objects are in it. The front camera sees a 5 cm cube as a few of the model's pixels and
cannot tell "further away" from "higher"; the wrist view shows the fingers and the object together.

Executed actions get noise (the labels never do) so the closed loop sees states off the expert's path.
In a ``miss_prob`` share of the pick and place episodes the executed policy first descends a few
centimetres beside the object and closes there (``BesideExpert``), labelled all along with what the
expert would do from each state, and then the expert takes over from the failed grasp: the model sees
what to do after a miss (open, rise, come down again) rather than only states of grasps that worked.
``steer_miss_prob`` does the same in steer episodes beside the object B that the trace goes to: there
the low states beside B are labelled by B's expert while the instruction names A, which is where a
dragged trace must be followed rather than the instruction (the compliance episodes that fail end
there, pressing down 2-5 cm beside B).
With ``policy`` (DAgger) a checkpoint drives ``policy_episodes`` more pick episodes, as the eval's
closed loop does, and every recorded state gets ``StateExpert``'s label (``ServoPickExpert``'s with
``expert="servo"``): what to do from the states the model itself reaches, which the scripted episodes
never visit. ``policy_steer_episodes`` more are steered as the eval steers them: instructed to pick A,
the trace dragged onto B (B's expert's trace every step, through ``steer_text`` or ``steer_visual``), each
state labelled by B's expert: what following a dragged trace means from the states a steered model
reaches. ``expert="servo"`` makes ``ServoPickExpert`` the pick expert of every episode.
Deterministic from the seed (and the policy's weights); workers are independent processes, each with
its own cell.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from app.sim import scene
from app.sim.tasks import TASKS, Expert, ServoPickExpert, StateExpert, Task
from model.decoder import NonFiniteLogitsError

FRONT_SIZE = (640, 480)          # the session's default front camera
WRIST_SIZE = (320, 240)          # the session's default wrist camera (``SimConfig.wrist_size``)
MODEL_IMAGE = (256, 256)         # DecoderConfig.image_size: the decoder resizes every image to this
DEPTH_SIZE = 80                  # the depth VQ-VAE's input side
PICK_TASKS = tuple(name for name, t in TASKS.items() if t.kind == "pick")
EXTRA_DONE_STEPS = 3             # steps recorded after the expert finished: hold still when done
MISS_MAX_STEPS = 40              # a missed grasp that cannot reach its height (blocked) ends here
FALLEN_Z_M = -0.02               # an object's centre this far below the table top has fallen off it
POLICY = "<policy>"              # episode_plan's "executed" for an episode a checkpoint drives (DAgger)
POLICY_SEED_BASE = 50_000        # their seeds, per data seed: apart from the scripted episodes' (< 100 000)
POLICY_STEER = "<policy-steer>"  # ... for an episode a checkpoint drives while steered onto another object
POLICY_STEER_SEED_BASE = 75_000  # their seeds, per data seed
STEER_MODES = ("steer_text", "steer_visual")
LOCATED = (*scene.OBJECTS, scene.BOWL)   # what ``StepRecord.objects_model`` locates, in this order


@dataclass(frozen=True)
class DataConfig:
    seed: int = 0
    episodes_per_task: int = 160     # clean episodes of each of the six tasks
    steer_episodes: int = 320        # pick A instructed, pick B executed (B != A)
    record_prob: float = 0.5         # chance a step is recorded: more layouts for the same data size
    max_steps: int = 90
    noise_m: float = 0.01            # std of the executed-action noise (metres), half the episodes
    alt_prob: float = 0.6            # chance a step also gets an ``alt`` label
    image_side: int = 168            # the checkpoint's base_image_input_size
    wrist: bool = False              # also record the wrist camera (the model's second image)
    wrist_fovy_deg: float = scene.FOVY_DEG   # its vertical field of view (``SimConfig.wrist_fovy_deg``)
    miss_prob: float = 0.0           # share of pick/place episodes that first miss the grasp (BesideExpert)
    steer_miss_prob: float = 0.0     # share of steer episodes that first miss the executed object B likewise
    miss_m: tuple[float, float] = (0.02, 0.045)   # how far beside the object that grasp closes
    policy: str | None = None        # a checkpoint that drives ``policy_episodes`` pick episodes (DAgger)
    policy_episodes: int = 0
    policy_steer_episodes: int = 0   # more, steered onto another object as the eval steers (DAgger for compliance)
    policy_steps: int = 60           # the eval's pick budget
    expert: str = "script"           # the pick expert: "script" (waypoints) or "servo" (ServoPickExpert)
    end_lost: bool = False           # end an episode once an object is lost: off the table or out of view (``lost``)
    workers: int = 2
    progress: bool = False


@dataclass
class StepRecord:
    task: str
    instruction: str
    episode: int
    steer_episode: bool
    image: np.ndarray                # [S, S, 3] uint8, the processor's resized pixels
    drawn: np.ndarray                # the same with a trace drawn (see drawn_kind)
    drawn_kind: str                  # "own" | "alt"
    inv_depth: np.ndarray            # [80, 80] float16, 1/m (0 where invalid)
    own_trace: np.ndarray            # [k, 2] int, model space
    own_action: np.ndarray           # [7]
    alt_trace: np.ndarray | None = None
    alt_action: np.ndarray | None = None
    ee_model: np.ndarray = field(default_factory=lambda: np.zeros(2))   # TCP projected, model space
    objects_model: np.ndarray | None = None   # [len(LOCATED), 2] their centres projected, model space
    wrist: np.ndarray | None = None           # [S, S, 3] uint8, the wrist camera as the processor sees it
    wrist_objects: np.ndarray | None = None   # [len(LOCATED), 2] in the wrist image, model space; NaN: not in view
    tcp_m: np.ndarray | None = None           # [3] the TCP in the base frame, metres
    objects_m: np.ndarray | None = None       # [len(LOCATED), 3] their centres in the base frame, metres
    own_target: str | None = None             # the object the ``own`` label goes for (B in a steer episode)
    alt_target: str | None = None             # ... and the ``alt`` label


def _stretched(small: np.ndarray, side: int) -> np.ndarray:
    """The processor's SigLIP bilinear stretch of a decoder-size image, kept as the uint8 it rounds to."""
    from model.image_processing import siglip_resize
    return np.rint(siglip_resize(small, (side, side)) * 255.0).astype(np.uint8)


def model_pixels(rgb: np.ndarray, side: int) -> np.ndarray:
    """What the processor feeds the ViT, as uint8: INTER_AREA to 256², then the SigLIP bilinear stretch."""
    from model.decoder import resize_for_model
    return _stretched(resize_for_model(rgb, MODEL_IMAGE), side)


def drawn_pixels(rgb: np.ndarray, trace: np.ndarray, side: int) -> np.ndarray:
    """As ``steer_visual`` draws: the polyline on the 256² image, then the processor's resize."""
    from model.decoder import DecoderConfig, draw_trace, resize_for_model
    small = draw_trace(resize_for_model(rgb, MODEL_IMAGE), [tuple(map(int, p)) for p in trace],
                       DecoderConfig().trace_thickness)
    return _stretched(small, side)


def inverse_depth(depth_m: np.ndarray, side: int = DEPTH_SIZE) -> np.ndarray:
    """Metres → 1/m on the VQ-VAE's square grid (stretched like the image); 0 stays invalid."""
    inv = np.where(depth_m > 0, 1.0 / np.maximum(depth_m, 1e-3), 0.0).astype(np.float32)
    return cv2.resize(inv, (side, side), interpolation=cv2.INTER_AREA).astype(np.float16)


def _other_pick(task: Task, rng: np.random.Generator) -> Task:
    others = [TASKS[n] for n in PICK_TASKS if TASKS[n].target != task.target]
    return others[int(rng.integers(len(others)))]


def episode_plan(cfg: DataConfig) -> list[tuple[int, str, str | None]]:
    """(episode seed, instructed task, executed pick task or None) for every episode."""
    plan: list[tuple[int, str, str | None]] = []
    k = 0
    for name in TASKS:
        for _ in range(cfg.episodes_per_task):
            plan.append((cfg.seed * 100_000 + k, name, None))
            k += 1
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.steer_episodes):
        a = TASKS[PICK_TASKS[int(rng.integers(len(PICK_TASKS)))]]
        plan.append((cfg.seed * 100_000 + k, a.name, _other_pick(a, rng).name))
        k += 1
    if cfg.policy is not None:
        for j in range(cfg.policy_episodes):
            plan.append((cfg.seed * 100_000 + POLICY_SEED_BASE + j, PICK_TASKS[j % len(PICK_TASKS)], POLICY))
        for j in range(cfg.policy_steer_episodes):
            plan.append((cfg.seed * 100_000 + POLICY_STEER_SEED_BASE + j, PICK_TASKS[j % len(PICK_TASKS)],
                         POLICY_STEER))
    return plan


class ModelPolicy:
    """A checkpoint driving the sim cell, as ``app.sim.eval`` and the DAgger episodes both run it:
    ``reason()`` on its cameras every step, the action through the sim arm's preset."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from app.devices.action_adapter import ActionAdapter
        from model.checkpoint import load_checkpoint
        from model.decoder import MolmoActDecoder
        self.ckpt = load_checkpoint(path, device=device)
        unknown = [c for c in self.ckpt.cameras if c not in ("front", "wrist")]
        if unknown or self.ckpt.cameras[0] != "front":
            raise ValueError(f"{path}: the sim cell has the cameras front (first) and wrist; the "
                             f"checkpoint wants {list(self.ckpt.cameras)}")
        self.decoder = MolmoActDecoder(self.ckpt)
        self.unnorm_key = sorted(self.ckpt.norm_stats)[0]
        self.adapter = ActionAdapter.for_arm("sim", self.unnorm_key)
        # the expert it learned from (app.sim.train records it; older checkpoints: the waypoint script)
        self.expert = (self.ckpt.training or {}).get("expert", "script")
        self.wrist_fovy_deg = scene.wrist_fovy_of(self.ckpt.training)

    def observe(self, cell, instruction: str):
        """(the observation of the checkpoint's cameras, the front camera's depth in metres)."""
        from model.reasoning import Observation
        rgb, depth, _ = cell.render("front", *FRONT_SIZE)
        images = [rgb] + [cell.render(c, *WRIST_SIZE)[0] for c in self.ckpt.cameras[1:]]
        return Observation(images, instruction, self.unnorm_key), depth

    def act(self, cell, instruction: str) -> np.ndarray:
        """The arm command for this state: ``reason()``'s action through the preset."""
        return self.adapter.map(self.decoder.reason(self.observe(cell, instruction)[0]).action)

    def steered(self, obs, trace: list[tuple[int, int]], mode: str):
        """(the plain answer or None, the steered answer) for a dragged ``trace``: ``steer_text`` re-decodes
        the action after a ``reason()`` of this view; ``steer_visual`` reads the trace drawn on the image."""
        if mode == "steer_text":
            first = self.decoder.reason(obs)
            return first, self.decoder.steer_text(trace)
        if mode == "steer_visual":
            return None, self.decoder.steer_visual(obs, trace)
        raise ValueError(f"unknown steering mode {mode!r}; expected one of {STEER_MODES}")

    def steer(self, cell, instruction: str, trace: list[tuple[int, int]], mode: str) -> np.ndarray:
        """The arm command for this state with the trace dragged to ``trace``."""
        return self.adapter.map(self.steered(self.observe(cell, instruction)[0], trace, mode)[1].action)


def run_policy_episode(cell, seed: int, task_name: str, cfg: DataConfig, episode: int,
                       policy: ModelPolicy) -> list[StepRecord]:
    """DAgger: the checkpoint acts, and every recorded state is labelled by ``StateExpert`` or
    ``ServoPickExpert`` (what to do from here), so the model learns what to do in the states *it*
    reaches: beside the object, closed on nothing, too high. Ends when the object is lifted, or when the
    model's answer cannot be acted on."""
    rng = np.random.default_rng(seed + 7)
    task = TASKS[task_name]
    cell.reset(seed, task)
    return _policy_rollout(cell, cfg, rng, task, lambda label: _record(cell, task, None, label, cfg, episode, rng),
                           lambda label: policy.act(cell, task.instruction))


def run_policy_steer_episode(cell, seed: int, task_name: str, cfg: DataConfig, episode: int,
                             policy: ModelPolicy) -> list[StepRecord]:
    """DAgger for steering: instructed to pick ``task_name`` (A), the operator drags the trace onto another
    object B every step (B's expert's trace, as the eval's steer episodes do) through a random one of the
    two modes, and every recorded state is labelled by B's expert (a steer record). Ends when B is lifted,
    B's expert is done, or the model's answer cannot be acted on."""
    rng = np.random.default_rng(seed + 7)
    task = TASKS[task_name]
    target = _other_pick(task, rng)
    mode = STEER_MODES[int(rng.integers(len(STEER_MODES)))]
    cell.reset(seed, task)
    return _policy_rollout(
        cell, cfg, rng, target, lambda label: _record(cell, task, target.name, label, cfg, episode, rng),
        lambda label: policy.steer(cell, task.instruction, [tuple(map(int, p)) for p in label.trace], mode))


def _policy_rollout(cell, cfg: DataConfig, rng: np.random.Generator, acted: Task, record, act) -> list[StepRecord]:
    """The DAgger loop: label the state with ``acted``'s state-based expert, maybe ``record`` it, then execute
    ``act(label)``, the checkpoint's command. Ends when ``acted`` is lifted or its expert is done, or when the
    model's answer cannot be acted on (the states so far are still data)."""
    records: list[StepRecord] = []
    for _ in range(cfg.policy_steps):
        label = (ServoPickExpert if cfg.expert == "servo" else StateExpert)(acted, cell).act()
        if no_label(cell, label.trace, cfg):
            break
        if rng.random() < cfg.record_prob:
            records.append(record(label))
        if label.done or acted.success(cell):
            break
        try:
            action = act(label)
        except (ValueError, NonFiniteLogitsError):
            break
        if not np.all(np.isfinite(action)):
            break
        cell.step(action)
    return records


def run_episode(cell, seed: int, task_name: str, executed: str | None, cfg: DataConfig,
                episode: int) -> list[StepRecord]:
    """One episode on ``cell``; the records of a random ``record_prob`` of its steps (plus a few after the
    expert is done)."""
    rng = np.random.default_rng(seed + 7)
    task = TASKS[task_name]
    cell.reset(seed, task)
    policy = (TASKS[executed] if executed else task).make_expert(cell, cfg.expert)
    noise = cfg.noise_m if rng.random() < 0.5 else 0.0
    acted = TASKS[executed] if executed else task          # whose object the executed policy goes for
    miss_prob = cfg.steer_miss_prob if executed else cfg.miss_prob
    beside = None
    if miss_prob > 0 and acted.kind != "push" and rng.random() < miss_prob:
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(*cfg.miss_m)
        beside = BesideExpert(acted, cell, offset=dist * np.array([np.cos(angle), np.sin(angle), 0.0]))
    records: list[StepRecord] = []
    done_steps = 0
    for k in range(cfg.max_steps):
        if beside is not None:
            missed = beside.act()
            if missed.done or k >= MISS_MAX_STEPS:   # closed beside the object: the expert takes over
                beside, policy = None, acted.make_expert(cell, cfg.expert)
            else:
                step = acted.make_expert(cell, cfg.expert).act()    # the label: the expert planned from here
                if no_label(cell, step.trace, cfg):
                    break
                if rng.random() < cfg.record_prob:
                    records.append(_record(cell, task, executed, step, cfg, episode, rng))
                cell.step(missed.action)
                continue
        step = policy.act()
        if no_label(cell, step.trace, cfg):
            break
        if rng.random() < cfg.record_prob:
            records.append(_record(cell, task, executed, step, cfg, episode, rng))
        if step.done:
            done_steps += 1
            if done_steps > EXTRA_DONE_STEPS:
                break
        _execute(cell, policy, step, noise, rng)
    return records


@dataclass
class BesideExpert(Expert):
    """The task's expert up to its grasp (above, down, close), but ``offset`` metres beside the object."""
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def plan(self):
        return [replace(wp, position=wp.position + self.offset) for wp in super().plan()[:3]]


def _record(cell, task: Task, executed: str | None, step, cfg: DataConfig, episode: int,
            rng: np.random.Generator) -> StepRecord:
    """This state's view and labels (``alt`` planned fresh from here for another object)."""
    w, h = FRONT_SIZE
    rgb, depth, _ = cell.render("front", w, h)
    acted = TASKS[executed] if executed else task          # whose object the own label goes for
    alt_trace = alt_action = alt_target = None
    if rng.random() < cfg.alt_prob:
        alt_task = _other_pick(acted, rng)
        alt = alt_task.make_expert(cell, cfg.expert).act()
        if traceable(alt.trace) and not (cfg.end_lost and on_border(alt.trace)):
            alt_trace, alt_action, alt_target = alt.trace, alt.action, alt_task.target
    drawn_kind = "alt" if (alt_trace is not None and not executed and rng.random() < 0.5) else "own"
    drawn_trace = alt_trace if drawn_kind == "alt" else step.trace
    tcp = cell.ee_pose().position.copy()
    ee = cell.to_model_space(cell.project(tcp[None], w, h), w, h)[0]
    located = np.stack([cell.object_position(n) for n in LOCATED])
    objects = cell.to_model_space(cell.project(located, w, h), w, h)
    wrist = wrist_objects = None
    if cfg.wrist:
        ww, wh = WRIST_SIZE
        wrist_rgb, _, _ = cell.render("wrist", ww, wh)
        wrist = model_pixels(wrist_rgb, cfg.image_side)
        wrist_objects = in_view(cell.project(located, ww, wh, camera="wrist"), ww, wh)
    return StepRecord(
        task=task.name, instruction=task.instruction, episode=episode, steer_episode=executed is not None,
        image=model_pixels(rgb, cfg.image_side), drawn=drawn_pixels(rgb, drawn_trace, cfg.image_side),
        drawn_kind=drawn_kind, inv_depth=inverse_depth(depth), own_trace=np.asarray(step.trace),
        own_action=np.asarray(step.action, float), alt_trace=None if alt_trace is None else np.asarray(alt_trace),
        alt_action=None if alt_action is None else np.asarray(alt_action, float), ee_model=ee,
        objects_model=objects, wrist=wrist, wrist_objects=wrist_objects, tcp_m=tcp,
        objects_m=located, own_target=acted.target, alt_target=alt_target)


def traceable(trace: np.ndarray) -> bool:
    """False for a trace through a point behind the front camera (an object knocked off the table toward it
    projects to NaN, which ``to_model_space`` writes as -1): such a state has no label to learn, and the
    episode's scene is broken from there on."""
    return bool(np.all(np.asarray(trace) >= 0))


def no_label(cell, trace: np.ndarray, cfg: DataConfig) -> bool:
    """The episode has no label to learn from here on: the expert's trace is not in the image, or (with
    ``end_lost``) an object is lost."""
    return not traceable(trace) or (cfg.end_lost and lost(cell, trace))


def lost(cell, trace: np.ndarray) -> bool:
    """True once an object is lost: it has fallen off the table, or the label's trace runs off the image (the
    object knocked over and rolled out of the front camera's view). Its expert then chases it to the
    workspace's edge: the arm pinned there, a trace clamped onto the image's border and the same saturated
    action, step after step. In the bundled recipe's data, lost objects (mostly green cylinders) gave 94
    records whose trace runs along the top border, labelled (-3.8, 0, 0) cm, and the bundled model flies off
    that way in held-out picks."""
    return on_border(trace) or any(cell.object_position(name)[2] < FALLEN_Z_M for name in scene.OBJECTS)


def on_border(trace: np.ndarray) -> bool:
    """A trace point on the image's border: ``to_model_space`` clamped it there from outside the image."""
    t = np.asarray(trace)
    return bool(np.any((t <= 0) | (t >= 255)))


def in_view(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates → model space (0..255, not rounded), NaN where outside the image or behind
    the camera (``to_model_space`` would clamp those onto the border)."""
    p = np.asarray(pixels, np.float64).reshape(-1, 2)
    size = np.array([width - 1.0, height - 1.0])
    inside = np.isfinite(p).all(1) & (p >= 0).all(1) & (p <= size).all(1)
    out = p / size * 255.0
    out[~inside] = np.nan
    return out


def _execute(cell, policy: Expert, step, noise: float, rng: np.random.Generator) -> None:
    """Send the expert's action, with noise while in transit (never once it is done)."""
    action = np.array(step.action, float)
    if noise > 0 and not step.done and policy.in_transit():
        action[:3] += rng.normal(0.0, noise, 3)
    cell.step(action)


def _one_thread() -> None:
    """A pool worker's start: one process per core, so torch's own threads would oversubscribe."""
    import torch
    torch.set_num_threads(1)


# a pool worker's cell and policy, made by its first chunk and kept for the next ones (one pair per process)
_RESIDENT: dict[str, object] = {}

# episodes per pool task: small, so a worker hands its records back as it goes (one big chunk per worker held
# every record twice while it was pickled back, and 31 k records OOM-killed a worker on a 24 GB machine) and
# the slow DAgger episodes spread over the workers
CHUNK_EPISODES = 16


def _data_cell(cfg: DataConfig):
    """The cell the data renders: the session's camera sizes, the wrist camera ``cfg`` names."""
    from app.sim.cell import SimCell, SimConfig
    return SimCell(SimConfig(front_size=FRONT_SIZE, wrist_size=WRIST_SIZE, wrist_fovy_deg=cfg.wrist_fovy_deg))


def _worker(args: tuple[DataConfig, list[tuple[int, tuple[int, str, str | None]]]]) -> list[StepRecord]:
    cfg, jobs = args
    with _data_cell(cfg) as cell:
        return _run_jobs(cfg, jobs, cell, _policy_for(cfg, jobs))


def _pool_worker(args: tuple[DataConfig, list[tuple[int, tuple[int, str, str | None]]]]) -> list[StepRecord]:
    """``_worker`` in a pool process: the cell and the policy outlive the chunk (the process closes them)."""
    cfg, jobs = args
    if "cell" not in _RESIDENT:
        _RESIDENT["cell"] = _data_cell(cfg)
    if _RESIDENT.get("policy") is None:      # loaded by the first chunk that has DAgger episodes
        _RESIDENT["policy"] = _policy_for(cfg, jobs)
    return _run_jobs(cfg, jobs, _RESIDENT["cell"], _RESIDENT["policy"])


def _policy_for(cfg: DataConfig, jobs) -> ModelPolicy | None:
    """The checkpoint that drives the DAgger episodes among ``jobs`` (None if there are none)."""
    if not any(job[2] in (POLICY, POLICY_STEER) for _, job in jobs):
        return None
    policy = ModelPolicy(cfg.policy)
    if "wrist" in policy.ckpt.cameras and policy.wrist_fovy_deg != cfg.wrist_fovy_deg:
        raise ValueError(f"{cfg.policy} was trained with a {policy.wrist_fovy_deg:.1f}° wrist camera; this data "
                         f"renders a {cfg.wrist_fovy_deg:.1f}° one (--wrist-fovy)")
    return policy


def _run_jobs(cfg: DataConfig, jobs, cell, policy: ModelPolicy | None) -> list[StepRecord]:
    out: list[StepRecord] = []
    for k, (episode, (seed, task, executed)) in enumerate(jobs):
        if executed == POLICY:
            out += run_policy_episode(cell, seed, task, cfg, episode, policy)
        elif executed == POLICY_STEER:
            out += run_policy_steer_episode(cell, seed, task, cfg, episode, policy)
        else:
            out += run_episode(cell, seed, task, executed, cfg, episode)
        if cfg.progress and cfg.workers <= 1 and (k + 1) % 25 == 0:
            print(f"  data: {k + 1}/{len(jobs)} episodes, {len(out)} steps", flush=True)
    return out


def scripted_part(cfg: DataConfig) -> DataConfig:
    """The same data without the checkpoint-driven (DAgger) episodes: the first episodes of ``cfg``'s plan."""
    return replace(cfg, policy=None, policy_episodes=0, policy_steer_episodes=0)


def generate(cfg: DataConfig, scripted: list[StepRecord] | None = None) -> list[StepRecord]:
    """All records, in episode order whatever the worker count (every episode seeds its own generator and
    resets the cell, so which process ran it does not matter).

    ``scripted``: the records of ``scripted_part(cfg)``, already made; only the DAgger episodes are run and
    appended (a DAgger round need not replay the scripted episodes: the result is the same records).

    A worker process that dies (killed for memory, say) raises ``RuntimeError`` here: a ``multiprocessing.Pool``
    waited forever for its lost chunk."""
    plan = list(enumerate(episode_plan(cfg)))
    if scripted is not None:
        n_scripted = len(episode_plan(scripted_part(cfg)))
        if scripted and scripted[-1].episode >= n_scripted:
            raise ValueError(f"the scripted records given reach episode {scripted[-1].episode}; the plan's "
                             f"scripted part has {n_scripted} episodes: they were made with other settings")
        return list(scripted) + _generate_plan(cfg, plan[n_scripted:])
    return _generate_plan(cfg, plan)


def _generate_plan(cfg: DataConfig, plan: list[tuple[int, tuple[int, str, str | None]]]) -> list[StepRecord]:
    if not plan:
        return []
    if cfg.workers <= 1:        # in this process, on its threads (the training that follows keeps them)
        return _worker((cfg, plan))
    chunks = [plan[i:i + CHUNK_EPISODES] for i in range(0, len(plan), CHUNK_EPISODES)]
    parts: list[list[StepRecord]] = []
    done = steps = 0
    with cf.ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_one_thread) as pool:
        futures = [pool.submit(_pool_worker, (cfg, c)) for c in chunks]
        try:
            for fut in cf.as_completed(futures):
                part = fut.result()
                parts.append(part)
                done, steps = done + 1, steps + len(part)
                if cfg.progress and (done % 5 == 0 or done == len(chunks)):
                    print(f"  data: {min(done * CHUNK_EPISODES, len(plan))}/{len(plan)} episodes "
                          f"({done}/{len(chunks)} chunks), {steps} steps", flush=True)
        except BrokenProcessPool as e:
            pool.shutdown(cancel_futures=True)
            raise RuntimeError(f"a data worker process died ({e}); if the system log says it was killed for "
                               f"memory, use fewer --workers or fewer episodes") from e
        except BaseException:
            pool.shutdown(cancel_futures=True)      # a chunk's error (or Ctrl-C) ends the run now, not after the rest
            raise
    records = [r for part in parts for r in part]
    records.sort(key=lambda r: r.episode)       # stable: steps stay in order within an episode
    return records


__all__ = ["DataConfig", "StepRecord", "generate", "run_episode", "run_policy_episode", "run_policy_steer_episode",
           "ModelPolicy", "episode_plan",
           "model_pixels", "drawn_pixels", "inverse_depth", "in_view", "PICK_TASKS", "WRIST_SIZE"]

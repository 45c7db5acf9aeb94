"""Training targets follow the runtime's grammar, and the training loop really trains."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from app.sim.datagen import DataConfig, StepRecord
from app.sim import train as train_module
from app.sim.datagen import LOCATED
from app.sim.train import (Example, IMAGE_SIDE, LocationProbe, ModelShape, PointerHead, SampleBuilder, TOKEN_GRID,
                           TrainConfig, UNNORM_KEY, batch_loss, image_reliance, length_groups, model_config,
                           norm_stats_from, preprocessor_config, tokenizer_corpus)
from model.checkpoint import init_random_
from model.actions import ActionStats, ActionTokenizer
from model.grammar import parse_answer_ids, replay, steer_visual_program
from model.molmoact import MolmoAct
from model.processor import MolmoActProcessor
from model.tokenizer import MolmoActTokenizer, build_tiny_tokenizer, save_tokenizer

SMALL = ModelShape(llm_width=32, llm_layers=1, vit_width=32, vit_layers=3)


def record(i: int, alt: bool = True) -> StepRecord:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    own = np.array([[100 + i, 120], [110, 150], [120, 190]])
    action = np.array([0.02, -0.01 * i, -0.03, 0.0, 0.0, 0.1, float(i % 2)])
    return StepRecord(task="pick_red_cube", instruction="pick up the red cube", episode=0, steer_episode=False,
                      image=img, drawn=img[::-1].copy(), drawn_kind="alt" if alt else "own",
                      inv_depth=np.zeros((80, 80), np.float16), own_trace=own, own_action=action,
                      alt_trace=np.array([[100, 120], [40, 60]]) if alt else None,
                      alt_action=np.array([-0.02, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0]) if alt else None,
                      ee_model=own[0], objects_model=rng.integers(0, 256, (5, 2)))


def mixed_batch(pieces) -> tuple[MolmoAct, list[Example], tuple]:
    """A fresh small model (seed 0), one batch of each sample kind, and ``batch_loss``'s one-image arguments."""
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    torch.manual_seed(0)
    model = small_model(tokenizer, stats_dict)
    batch = [builder.build(r, np.arange(100) % 7, k) for r, k in zip(recs, ("reason", "visual", "reason_alt",
                                                                            "reason"))]
    one = processor([builder.blank], "x")
    return model, batch, (one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)


def small_model(tokenizer: MolmoActTokenizer, stats_dict: dict) -> MolmoAct:
    model = MolmoAct(model_config(SMALL, stats_dict, tokenizer.ids.im_patch))
    init_random_(model, 0, scale_residual=True)
    model.init_rope()
    return model


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck")
    tok = build_tiny_tokenizer(bpe_vocab=SMALL.bpe_vocab, embedding_size=SMALL.embedding_size,
                               trained_vocab=SMALL.trained_vocab, corpus=tokenizer_corpus(0))
    save_tokenizer(tok, out)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config()))
    tokenizer = MolmoActTokenizer.from_dir(out)
    processor = MolmoActProcessor.from_dir(out, tokenizer)
    recs = [record(i) for i in range(4)]
    stats_dict = norm_stats_from(recs)
    stats = ActionStats.from_norm_stats(stats_dict, UNNORM_KEY)
    builder = SampleBuilder(tokenizer, processor, stats, TrainConfig().loss_weights)
    return tokenizer, processor, stats_dict, stats, builder, recs


def test_action_ids_are_the_last_256_before_eos(pieces):
    tokenizer = pieces[0]
    assert tokenizer.action_base_id == tokenizer.ids.eos
    assert tokenizer.id_to_token(tokenizer.ids.eos - 1) is not None
    assert tokenizer.ids.im_patch >= SMALL.embedding_size        # image specials start at vocab_size


def test_reason_sample_parses_back_to_its_labels(pieces):
    tokenizer, processor, _, stats, builder, recs = pieces
    rec = recs[1]
    codes = np.arange(100) % 128
    ex = builder.build(rec, codes, "reason")
    prompt = builder.prompt_ids(rec.instruction, "reason")
    assert ex.ids[:len(prompt)] == prompt and ex.image is rec.image
    parsed = parse_answer_ids(builder.gt, ex.ids[len(prompt):])
    assert parsed.depth_codes == codes.tolist()
    assert parsed.trace == [tuple(p) for p in rec.own_trace.tolist()]
    acts = ActionTokenizer(base_id=tokenizer.action_base_id).decode(parsed.action_token_ids)
    from model.actions import normalize
    np.testing.assert_allclose(acts, normalize(rec.own_action, stats), atol=1 / 127)
    assert all(w == 0 for w in ex.weights[:len(prompt)]) and max(ex.weights) > 0


def test_alt_sample_forces_the_other_trace_without_trace_loss(pieces):
    _, _, _, _, builder, recs = pieces
    rec = recs[2]
    ex = builder.build(rec, np.zeros(100, int), "reason_alt")
    prompt = builder.prompt_ids(rec.instruction, "reason")
    parsed = parse_answer_ids(builder.gt, ex.ids[len(prompt):])
    assert parsed.trace == [tuple(p) for p in rec.alt_trace.tolist()]
    trace_ids = builder.gt.trace_ids(parsed.trace)
    start = len(prompt) + len(builder.gt.depth_prefix) + 100 + len(builder.gt.trace_prefix)
    assert tuple(ex.ids[start:start + len(trace_ids)]) == trace_ids
    assert all(w == 0 for w in ex.weights[start:start + len(trace_ids)])


def test_visual_sample_is_the_steering_answer_on_the_drawn_image(pieces):
    _, _, _, _, builder, recs = pieces
    rec = recs[0]
    ex = builder.build(rec, np.zeros(100, int), "visual")
    prompt = builder.prompt_ids(rec.instruction, "visual")
    assert ex.image is rec.drawn
    parsed = replay(steer_visual_program(builder.gt), ex.ids[len(prompt):])
    assert len(parsed.action_token_ids) == 7


def test_pointer_reads_before_the_answer_and_targets_where_it_goes(pieces):
    """Reasoning samples point (just before the trace) at the named object; trajectory-conditioned ones
    (just before the action) at the drawn line's end; both also at the TCP."""
    _, _, _, _, builder, recs = pieces
    rec = recs[1]
    red = rec.objects_model[LOCATED.index("red_cube")]
    for kind in ("reason", "reason_alt"):
        ex = builder.build(rec, np.zeros(100, int), kind)
        start = ex.pointer_at + 1 - len(builder.gt.trace_prefix)
        assert tuple(ex.ids[start:ex.pointer_at + 1]) == builder.gt.trace_prefix
        assert ex.pointer_from == len(builder.prompt_ids(rec.instruction, "reason")) - 1
        np.testing.assert_array_equal(ex.pointer_target, np.stack([red, rec.ee_model]))
    for alt in (True, False):
        r = record(3, alt=alt)
        ex = builder.build(r, np.zeros(100, int), "visual")
        start = ex.pointer_at + 1 - len(builder.gt.steer_action_prefix)
        assert tuple(ex.ids[start:ex.pointer_at + 1]) == builder.gt.steer_action_prefix
        assert ex.pointer_from == len(builder.prompt_ids(r.instruction, "visual")) - 1
        drawn = r.alt_trace if alt else r.own_trace
        np.testing.assert_array_equal(ex.pointer_target, np.stack([drawn[-1], r.ee_model]))


def test_length_groups_split_where_padding_is_least():
    assert length_groups([300, 100, 300, 110, 290]) == [[1, 3], [4, 0, 2]]
    assert length_groups([300, 300, 300]) == [[0, 1, 2]]
    assert sorted(i for g in length_groups([5, 1, 9, 3]) for i in g) == [0, 1, 2, 3]


def test_grouped_batch_loss_equals_one_padded_batch(pieces, monkeypatch):
    """Running the LLM per length group is only a saving: the loss and the pointer's input are the same."""
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    model = small_model(tokenizer, stats_dict)
    pointer = PointerHead(SMALL.llm_width)
    batch = [builder.build(r, np.arange(100) % 7, k) for r, k in zip(recs, ("reason", "visual", "reason_alt",
                                                                            "visual"))]
    one = processor([builder.blank], "x")
    args = (model, batch, one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)
    assert len(length_groups([len(e.ids) for e in batch])) == 2
    grouped, info = batch_loss(*args, pointer=pointer, look_weight=0.3)
    monkeypatch.setattr(train_module, "length_groups", lambda lengths: [list(range(len(lengths)))])
    single, info_single = batch_loss(*args, pointer=pointer, look_weight=0.3)
    assert grouped.item() == pytest.approx(single.item(), rel=1e-5)
    assert info["pointer_loss"] == pytest.approx(info_single["pointer_loss"], rel=1e-4)
    assert info["look_loss"] == pytest.approx(info_single["look_loss"], rel=1e-4)


def test_pointer_head_learns_to_point(pieces):
    """Training with the pointer drives its error down (its gradient reaches the LLM and the head)."""
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    torch.manual_seed(0)
    model = small_model(tokenizer, stats_dict)
    pointer = PointerHead(SMALL.llm_width)
    batch = [builder.build(r, np.arange(100) % 7, "reason") for r in recs]
    one = processor([builder.blank], "x")
    opt = torch.optim.AdamW(list(model.parameters()) + list(pointer.parameters()), lr=3e-3)
    errors = []
    for _ in range(60):
        loss, info = batch_loss(model, batch, one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos,
                                pointer=pointer, pointer_weight=5.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(info["pointer_error_goal"])
    assert errors[-1] < 0.5 * errors[0]


def test_norm_stats_cover_the_labels_and_keep_the_gripper_raw(pieces):
    stats = pieces[2][UNNORM_KEY]["action"]
    assert stats["mask"] == [True] * 6 + [False]
    assert stats["q01"][6] == 0.0 and stats["q99"][6] == 1.0
    assert all(hi > lo for lo, hi in zip(stats["q01"], stats["q99"]))


def test_training_loop_fits_a_batch(pieces):
    """A few optimizer steps on one batch must drive its loss well down (the loop really trains)."""
    model, batch, args = mixed_batch(pieces)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, info = batch_loss(model, batch, *args)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["ce"])
    assert losses[-1] < 0.5 * losses[0]
    assert info["image_feature_rms"] < 5.0                 # the scale guard keeps image features from exploding


def test_location_probe_reads_back_a_perfect_answer():
    """The probe's read-out (most present cell + its offset) recovers the points from exact local targets."""
    probe = LocationProbe(8, 2, 6)
    located = torch.tensor([[[10.0, 250.0], [128.0, 100.0]]])
    cell = 256 / 6
    token = [5 * 6 + 0, 2 * 6 + 3]            # (row, col) of each point's cell
    presence = torch.full((1, 36, 2), -9.0)
    offsets = torch.zeros(1, 36, 2, 2)
    for k, t in enumerate(token):
        presence[0, t, k] = 9.0
        offsets[0, t, k] = (located[0, k] - probe.centres[t]) / cell
    centre = (probe.centres[None] - 128) / 64
    probe.forward = lambda feats: (presence, offsets, centre)
    loss, error = probe.loss(torch.zeros(36, 8), located)
    assert float(error.max()) < 1e-4 and float(loss) < 0.01


def test_vision_pretraining_learns_where_things_are(pieces):
    """Stage 1 (vision tower + probe alone) drives the probe's loss down on scenes where the located
    things are visible, and the probe never enters the model's state dict (a training aid only)."""
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    from app.sim.train import pretrain_vision
    colours = np.array([[220, 30, 30], [30, 60, 220], [40, 180, 60], [240, 210, 30], [250, 250, 250], [0, 0, 0]])

    def scene(i):                   # the located things drawn as coloured squares on a grey table
        rng = np.random.default_rng(100 + i)
        where = rng.integers(10, 246, (6, 2))
        img = np.full((IMAGE_SIDE, IMAGE_SIDE, 3), 128, np.uint8)
        for (x, y), c in zip(where, colours):
            px, py = int(x / 255 * (IMAGE_SIDE - 1)), int(y / 255 * (IMAGE_SIDE - 1))
            img[max(py - 5, 0):py + 5, max(px - 5, 0):px + 5] = c
        return replace(recs[0], image=img, drawn=img, objects_model=where[:5], ee_model=where[5])

    scenes = [scene(i) for i in range(32)]
    model = small_model(tokenizer, stats_dict)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = LocationProbe(SMALL.llm_width, 6, TOKEN_GRID)
    one = processor([builder.blank], "x")
    cfg = TrainConfig(batch=8, vision_steps=240, log_every=10)
    history = pretrain_vision(model, probe, scenes, cfg, one.pooled_patches_idx, one.crops.shape[1], log=lambda m: None)
    first, last = history[0]["probe_loss"], min(h["probe_loss"] for h in history[-3:])
    assert last < 0.7 * first, [(h["probe_loss"], h["probe_error"]) for h in history]
    after = model.state_dict()
    assert set(after) == set(before) and not any("probe" in k for k in after)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed and all("vision_backbone" in k for k in changed)    # stage 1 leaves the LLM alone


def test_image_reliance_is_zero_for_a_model_blind_to_its_image(pieces):
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    model = small_model(tokenizer, stats_dict)
    # plain images of different brightness: random-noise images all look alike to an untrained tower
    plain = [replace(r, image=np.full((IMAGE_SIDE, IMAGE_SIDE, 3), 30 + 60 * i, np.uint8)) for i, r in enumerate(recs)]
    batch = [builder.build(r, np.zeros(100, int), "reason") for r in plain]
    one = processor([builder.blank], "x")
    args = (one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)
    with torch.no_grad():
        projector = model.model.vision_backbone.image_projector
        for w in (projector.w1, projector.w2, projector.w3):   # at init the SwiGLU's output is ~1e-8:
            w.weight.normal_(0.0, 5.0)                           # give the images features that matter
        seeing = image_reliance(model, batch, *args)
        projector.w2.weight.zero_()                              # no image feature reaches the LLM
        blind = image_reliance(model, batch, *args)
    assert seeing["image_gain"] != 0.0
    assert blind["image_gain"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("wrist, numbers, precision", [(False, False, "fp32"), (True, True, "bf16")])
def test_pipeline_is_deterministic_and_writes_a_loadable_checkpoint(tmp_path, wrist, numbers, precision):
    """Two runs from one seed give byte-identical weights; the runtime loads and runs the result (with
    ``wrist``: a checkpoint that says it takes the front and wrist images, and reasons on both; with
    ``numbers``: the bundled recipe's tokens, one per coordinate and per action value, and soft targets;
    with bf16 autocast the saved weights are still fp32)."""
    from app.sim.depth_vq import VQTrainConfig
    from app.sim.train import train
    from model.checkpoint import load_checkpoint
    from model.decoder import MolmoActDecoder
    from model.reasoning import Observation
    cfg = TrainConfig(steps=3, batch=4, shape=SMALL, log_every=1, vision_steps=2,
                      data=DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=8, workers=1, record_prob=1.0,
                                      wrist=wrist),
                      vq=VQTrainConfig(steps=4, batch=4), whole_action_tokens=numbers, whole_number_tokens=numbers,
                      ordinal_sigma=1.5 if numbers else 0.0, precision=precision)
    runs = [train(cfg, tmp_path / name, log=lambda m: None) for name in ("a", "b")]
    assert runs[0]["records"] == runs[1]["records"] == 16
    for name in ("model-00001-of-00001.safetensors", "vae-final.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    ck = load_checkpoint(tmp_path / "a")
    assert ck.cameras == (("front", "wrist") if wrist else ("front",))
    images = [np.zeros((480, 640, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)][:len(ck.cameras)]
    r = MolmoActDecoder(ck).reason(Observation(images, "pick up the red cube"))
    assert len(r.depth_codes) == 100 and r.unnorm_key == UNNORM_KEY and np.all(np.isfinite(r.action))
    from model.grammar import GrammarTokens
    assert (GrammarTokens(ck.tokenizer).number_ids is not None) == numbers
    assert ck.training["ordinal_sigma"] == (1.5 if numbers else 0.0)
    assert ck.training["precision"] == precision
    assert all(t.dtype == torch.float32 for t in ck.model.state_dict().values() if t.is_floating_point())


def test_precision_auto_is_bf16_only_where_the_device_has_it_natively():
    from app.sim.train import bf16_native, resolve_precision
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_native("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp16", "cpu")


def test_a_bf16_autocast_step_has_the_fp32_loss_and_fp32_gradients(pieces):
    """Autocast runs the products in bf16 but the loss it returns and the gradients the fp32 weights get
    are those of the fp32 step, to bf16's precision."""
    from app.sim.train import autocast
    model, batch, args = mixed_batch(pieces)
    results = []
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with autocast(precision, "cpu"):
            loss, _ = batch_loss(model, batch, *args)
        loss.backward()
        grad = model.lm_head.weight.grad.clone()
        results.append((loss.dtype, float(loss.detach()), grad))
    (d32, l32, g32), (d16, l16, g16) = results
    assert d32 == d16 == torch.float32 and g16.dtype == torch.float32
    assert abs(l16 - l32) < 0.02 * abs(l32)
    assert float(torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)) > 0.98


@pytest.mark.slow
def test_a_continued_checkpoint_keeps_its_tokenizer_norm_stats_and_depth_decoder(tmp_path):
    """``--init-from``: the run starts from the checkpoint's weights (with no steps, the fitted heads leave
    them untouched), keeps what gives its tokens their meaning (tokenizer, action normalization, depth
    decoder) even on other data, says what it continued, and refuses a checkpoint it cannot continue."""
    from app.sim.datagen import DataConfig
    from app.sim.depth_vq import VQTrainConfig
    from app.sim.train import train
    from model.checkpoint import load_checkpoint
    data = DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=8, workers=1, record_prob=1.0)
    base_cfg = TrainConfig(steps=3, batch=4, shape=SMALL, log_every=1, vision_steps=2, data=data,
                           vq=VQTrainConfig(steps=4, batch=4))
    train(base_cfg, tmp_path / "base", log=lambda m: None)
    other_data = replace(data, seed=5, steer_episodes=3)          # other actions: other norm stats
    cont = replace(base_cfg, init_from=tmp_path / "base", head_warmup=2, data=other_data)
    train(replace(cont, steps=0), tmp_path / "zero", log=lambda m: None)
    train(cont, tmp_path / "more", log=lambda m: None, data_cache=tmp_path / "cont.pkl")
    # another training seed continues it too: its tokenizer is built from the first run's seed, as the base's
    # was (it was refused, after the data), and ``data_seed`` reads the continuation's data from its cache
    said = []
    train(replace(cont, seed=1, data_seed=0, steps=1), tmp_path / "seed1", log=said.append,
          data_cache=tmp_path / "cont.pkl")
    assert any(m.startswith("data:") and "read from" in m for m in said), said[:3]
    assert not any(m.startswith("generating data") for m in said)
    assert (tmp_path / "seed1" / "tokenizer.json").read_bytes() == (tmp_path / "base" / "tokenizer.json").read_bytes()
    seed1 = json.loads((tmp_path / "seed1" / "config.json").read_text())["training"]
    assert seed1["seed"] == 1 and seed1["data_seed"] == 0
    weights = "model-00001-of-00001.safetensors"
    assert (tmp_path / "zero" / weights).read_bytes() == (tmp_path / "base" / weights).read_bytes()
    assert (tmp_path / "more" / weights).read_bytes() != (tmp_path / "base" / weights).read_bytes()
    for name in ("vae-final.safetensors", "tokenizer.json"):
        assert (tmp_path / "more" / name).read_bytes() == (tmp_path / "base" / name).read_bytes(), name
    train(replace(base_cfg, data=other_data), tmp_path / "fresh", log=lambda m: None)
    base, more = load_checkpoint(tmp_path / "base"), load_checkpoint(tmp_path / "more")
    assert more.norm_stats == base.norm_stats != load_checkpoint(tmp_path / "fresh").norm_stats
    training = json.loads((tmp_path / "more" / "config.json").read_text())["training"]
    assert training["init_from"]["path"] == str(tmp_path / "base")
    assert training["init_from"]["training"]["steps"] == 3 and training["vision_steps"] == 0
    with pytest.raises(ValueError, match="cameras"):
        train(replace(cont, data=replace(other_data, wrist=True)), tmp_path / "wrist", log=lambda m: None)
    with pytest.raises(ValueError, match="model config"):
        train(replace(cont, shape=replace(SMALL, llm_layers=2)), tmp_path / "deeper", log=lambda m: None)
    before = {f.name: f.read_bytes() for f in (tmp_path / "base").iterdir()}
    with pytest.raises(ValueError, match="elsewhere"):
        train(cont, tmp_path / "base", log=lambda m: None)
    assert {f.name: f.read_bytes() for f in (tmp_path / "base").iterdir()} == before


def test_a_dagger_run_records_which_checkpoint_drove_which_episodes(tmp_path):
    """``config.json`` says the data had DAgger episodes, from which weights (the digest the data cache keys
    on) and how many of each kind; a run without them says nothing of the sort."""
    from app.sim.datagen import DataConfig
    from app.sim.depth_vq import VQTrainConfig
    from app.sim.train import policy_digest, train
    from tests.checkpoints import TINY_MODEL
    data = DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=6, workers=1, record_prob=1.0)
    cfg = TrainConfig(steps=1, batch=4, shape=SMALL, vision_steps=0, data=data, vq=VQTrainConfig(steps=2, batch=4))
    dagger = replace(data, policy=str(TINY_MODEL), policy_episodes=1, policy_steer_episodes=2, policy_steps=2)
    summary = train(replace(cfg, data=dagger), tmp_path / "dag", log=lambda m: None)
    training = json.loads((tmp_path / "dag" / "config.json").read_text())["training"]
    assert training["dagger"] == {"from": str(TINY_MODEL), "policy_digest": policy_digest(TINY_MODEL),
                                  "episodes": 1, "steer_episodes": 2}
    assert summary["records"] > 12                      # the 12 scripted ones and at least one per DAgger episode
    train(cfg, tmp_path / "plain", log=lambda m: None)
    assert "dagger" not in json.loads((tmp_path / "plain" / "config.json").read_text())["training"]


@pytest.mark.slow
def test_time_budgeted_run_is_the_run_with_the_steps_it_reports(tmp_path):
    """``--train-seconds`` times real steps on a throwaway copy, so the run it makes is byte for byte the
    run that ``--steps N`` with the reported N makes (what the README's reproduction command relies on)."""
    from app.sim.datagen import DataConfig
    from app.sim.depth_vq import VQTrainConfig
    from app.sim.train import train
    cfg = TrainConfig(batch=4, shape=SMALL, log_every=1, vision_steps=2, train_seconds=2.0,
                      data=DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=8, workers=1, record_prob=1.0),
                      vq=VQTrainConfig(steps=4, batch=4))
    lines: list[str] = []
    budgeted = train(cfg, tmp_path / "a", log=lines.append)
    assert any(f"--steps {budgeted['steps']} " in line for line in lines)
    assert budgeted["steps"] >= 1
    fixed = train(replace(cfg, train_seconds=None, steps=budgeted["steps"]), tmp_path / "b", log=lambda m: None)
    assert fixed["steps"] == budgeted["steps"]
    name = "model-00001-of-00001.safetensors"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_look_target_is_the_image_token_where_the_answer_goes(pieces):
    _, _, _, _, builder, recs = pieces
    rec = recs[2]
    red = rec.objects_model[LOCATED.index("red_cube")]
    grid, cell = TOKEN_GRID, 256 / TOKEN_GRID
    ex = builder.build(rec, np.zeros(100, int), "reason")
    assert ex.look_at == int(red[1] // cell) * grid + int(red[0] // cell)
    vis = builder.build(record(3, alt=True), np.zeros(100, int), "visual")
    assert vis.look_at == int(60 // cell) * grid + int(40 // cell)   # the drawn alt trace ends at (40, 60)
    assert Example(ex.ids, ex.weights, ex.image).look_at is None


def test_look_loss_teaches_one_head_where_to_look(pieces):
    """Attention supervision drives the supervised head's attention onto the named object's image token;
    its log-prob is the real attention's (the same q and k as the forward pass)."""
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    torch.manual_seed(0)
    model = small_model(tokenizer, stats_dict)
    batch = [builder.build(r, np.arange(100) % 7, k) for r, k in zip(recs, ("reason", "reason", "visual", "reason"))]
    one = processor([builder.blank], "x")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, info = batch_loss(model, batch, one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos,
                                look_weight=5.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["look_loss"])
    assert losses[0] > 4.0                           # ~uniform over the ~300 tokens at first
    assert losses[-1] < 0.5 * losses[0] and info["look_acc"] == 1.0
    _, plain = batch_loss(model, batch, one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)
    assert "look_loss" not in plain



def test_batched_look_and_pointer_losses_equal_a_per_sample_computation(pieces):
    """The batched losses are the per-sample definitions: for each sample, the look head's -log p of the
    target image token averaged over the positions read, and the pointer's squared error over them."""
    import math
    from app.sim.train import look_attention, look_loss, LOOK_HEAD
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    torch.manual_seed(1)
    model = small_model(tokenizer, stats_dict)
    pointer = PointerHead(SMALL.llm_width)
    batch = [builder.build(r, np.arange(100) % 7, "reason") for r in recs]
    s = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), s), tokenizer.ids.eos, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
    one = processor([builder.blank], "x")
    feats, _, _ = train_module.image_features(model, np.stack([e.image for e in batch]), one.pooled_patches_idx,
                                              one.crops.shape[1])
    captured = []
    hook = look_attention(model).register_forward_pre_hook(lambda _m, args: captured.append(args[:3]))
    with torch.no_grad():
        hidden = model(model.add_image_features(model.model.transformer.wte(ids), ids, feats))
        hook.remove()
        rows = [(1, batch[1]), (3, batch[3]), (0, batch[0])]           # any subset, any order
        per_row, hits = look_loss(model, captured[0], ids, rows)
        attn = look_attention(model)
        q, k, _ = attn.qkv(*captured[0])
        for (row, e), got, hit in zip(rows, per_row, hits):
            target = (ids[row] == model.cfg.image_patch_id).nonzero()[:, 0][e.look_at]
            want = []
            for at in range(e.pointer_from, e.pointer_at + 1):
                sc = q[row, LOOK_HEAD, at] @ k[row, LOOK_HEAD, :at + 1].T / math.sqrt(q.shape[-1])
                want.append(-sc.log_softmax(-1)[target])
                if at == e.pointer_at:
                    assert bool(hit) == bool(sc.argmax() == target)
            assert float(got) == pytest.approx(float(torch.stack(want).mean()), rel=1e-4)
        spans = torch.tensor([[e.pointer_from, e.pointer_at] for e in batch])
        target_xy = torch.from_numpy(np.stack([e.pointer_target for e in batch]))
        per_sample, error = pointer.loss(hidden, spans, target_xy)
        for row, e in enumerate(batch):
            pred = pointer.head(hidden[row, e.pointer_from:e.pointer_at + 1]).view(-1, 2, 2)
            goal = target_xy[row] / 128.0 - 1.0
            assert float(per_sample[row]) == pytest.approx(float((pred - goal).pow(2).mean()), rel=1e-5)
            assert error[row].numpy() == pytest.approx(((pred[-1] - goal).norm(dim=-1) * 128).numpy(), rel=1e-4)


# ------------------------------------------------------------------------------ two images (front + wrist)
def with_wrist(rec: StepRecord, brightness: int, seen: int = 3) -> StepRecord:
    """The record with a plain wrist image and the first ``seen`` objects in its view."""
    objects = np.full((len(LOCATED), 2), np.nan)
    objects[:seen] = np.linspace(20, 230, 2 * seen).reshape(seen, 2)
    return replace(rec, wrist=np.full((IMAGE_SIDE, IMAGE_SIDE, 3), brightness, np.uint8), wrist_objects=objects)


def test_two_image_samples_use_the_multi_image_prompt_with_the_trace_image_first(pieces):
    tokenizer, processor, _, stats, _, recs = pieces
    builder = SampleBuilder(tokenizer, processor, stats, TrainConfig().loss_weights, n_images=2)
    rec = with_wrist(recs[1], 90)
    for kind in ("reason", "visual"):
        ex = builder.build(rec, np.arange(100) % 7, kind)
        image_tokens = [i for i in ex.ids if i == tokenizer.ids.im_patch]
        assert len(image_tokens) == 2 * TOKEN_GRID ** 2
        text = tokenizer.decode(ex.ids)
        assert "Image 1" in text and "Image 2" in text and "first image" in text
        assert ex.images.shape == (2, IMAGE_SIDE, IMAGE_SIDE, 3)
        assert np.array_equal(ex.images[0], rec.drawn if kind == "visual" else rec.image)
        assert np.array_equal(ex.images[1], rec.wrist)
        first_image = np.flatnonzero(np.asarray(ex.ids) == tokenizer.ids.im_patch)[:TOKEN_GRID ** 2]
        assert ex.look_position(tokenizer.ids.im_patch) in first_image     # the look-up stays on the front


def test_the_wrist_image_reaches_the_loss_and_its_probe_skips_what_it_does_not_see(pieces):
    tokenizer, processor, stats_dict, stats, _, recs = pieces
    builder = SampleBuilder(tokenizer, processor, stats, TrainConfig().loss_weights, n_images=2)
    model = small_model(tokenizer, stats_dict)
    with torch.no_grad():
        projector = model.model.vision_backbone.image_projector
        for w in (projector.w1, projector.w2, projector.w3):
            w.weight.normal_(0.0, 5.0)
    one = processor([builder.blank] * 2, "x")
    args = (one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)
    probe = LocationProbe(SMALL.llm_width, len(LOCATED) + 1, TOKEN_GRID)
    wrist_probe = LocationProbe(SMALL.llm_width, len(LOCATED), TOKEN_GRID)

    def loss(brightness):
        batch = [builder.build(with_wrist(r, brightness), np.zeros(100, int), "reason") for r in recs]
        with torch.no_grad():
            return batch_loss(model, batch, *args, probe=probe, wrist_probe=wrist_probe)

    dark, info = loss(20)
    bright, _ = loss(230)
    assert np.isfinite(info["probe_loss"]) and dark.item() != bright.item()
    # a thing out of view: no presence target anywhere, and no offset or error from it
    feats = torch.randn(2 * TOKEN_GRID ** 2, SMALL.llm_width)
    located = torch.full((2, len(LOCATED), 2), float("nan"))
    located[:, 0] = torch.tensor([40.0, 200.0])
    _, error = wrist_probe.loss(feats, located)
    assert torch.isfinite(error).all() and float(error[1:].abs().sum()) == 0.0


def test_the_wrist_look_target_is_the_named_objects_wrist_token_read_where_the_action_is_written(pieces):
    from app.sim.train import wrist_token
    tokenizer, processor, _, stats, _, recs = pieces
    builder = SampleBuilder(tokenizer, processor, stats, TrainConfig().loss_weights, n_images=2)
    rec = with_wrist(recs[1], 90)                       # red cube (the instruction's) in view
    ex = builder.build(rec, np.arange(100) % 7, "reason")
    red = rec.wrist_objects[LOCATED.index("red_cube")]
    cell = 256 / TOKEN_GRID
    assert ex.wrist_look_at == wrist_token(rec.wrist_objects, "red_cube") == \
        int(red[1] // cell) * TOKEN_GRID + int(red[0] // cell)
    patches = np.flatnonzero(np.asarray(ex.ids) == tokenizer.ids.im_patch)
    assert ex.wrist_look_position(tokenizer.ids.im_patch) == patches[TOKEN_GRID ** 2 + ex.wrist_look_at]
    first, last = ex.action_span                         # the positions whose next token is the action's text
    action_w = TrainConfig().loss_weights["action"]
    assert all(ex.weights[i + 1] == action_w for i in range(first, last + 1))
    assert ex.weights[first] != action_w and last + 2 == len(ex.ids)
    # no wrist look-up where the action is not toward the named object, or where it is out of view
    assert builder.build(rec, np.arange(100) % 7, "reason_alt").wrist_look_at is None
    assert builder.build(replace(rec, steer_episode=True), np.arange(100) % 7, "reason").wrist_look_at is None
    assert builder.build(rec, np.arange(100) % 7, "visual").wrist_look_at is None
    unseen = with_wrist(recs[1], 90, seen=0)
    assert builder.build(unseen, np.arange(100) % 7, "reason").wrist_look_at is None


def test_the_wrist_look_loss_teaches_its_own_head_to_read_the_wrist_image(pieces):
    from app.sim.train import LOOK_HEAD, WRIST_LOOK_HEAD
    assert WRIST_LOOK_HEAD != LOOK_HEAD
    tokenizer, processor, stats_dict, stats, _, recs = pieces
    builder = SampleBuilder(tokenizer, processor, stats, TrainConfig().loss_weights, n_images=2)
    torch.manual_seed(0)
    model = small_model(tokenizer, stats_dict)
    batch = [builder.build(replace(with_wrist(r, 0), wrist=recs[i - 1].image), np.arange(100) % 7, "reason")
             for i, r in enumerate(recs)]
    one = processor([builder.blank] * 2, "x")
    args = (one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, info = batch_loss(model, batch, *args, wrist_look_weight=5.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["wrist_look_loss"])
    assert "look_loss" not in info                      # the front look-up is its own option
    assert losses[0] > 4.0 and losses[-1] < 0.5 * losses[0] and info["wrist_look_acc"] == 1.0
    _, plain = batch_loss(model, batch, *args)
    assert "wrist_look_loss" not in plain


def with_positions(rec: StepRecord, own: str = "red_cube", alt: str | None = "blue_block") -> StepRecord:
    """``rec`` with 3-D positions: the TCP at (0.5, 0, 0.2), object k at (0.4 + 0.05 k, 0.1 - 0.05 k, 0.02)."""
    objects = np.array([[0.4 + 0.05 * k, 0.1 - 0.05 * k, 0.02] for k in range(len(LOCATED))])
    return replace(rec, tcp_m=np.array([0.5, 0.0, 0.2]), objects_m=objects, own_target=own, alt_target=alt)


def test_the_offset_target_is_the_acted_on_objects_place_from_the_tcp(pieces):
    """reason: the object the own label goes for (the named one, or B in a steer episode); reason_alt: the
    forced trace's object; visual: the drawn trace's object. Read at the positions that write the action."""
    builder, recs = pieces[4], pieces[5]
    rec = with_positions(recs[1])                       # drawn_kind "alt"

    def offset(r, kind):
        return builder.build(r, np.arange(100) % 7, kind).offset_target

    red, blue = (rec.objects_m[LOCATED.index(n)] - rec.tcp_m for n in ("red_cube", "blue_block"))
    np.testing.assert_allclose(offset(rec, "reason"), red, atol=1e-6)
    np.testing.assert_allclose(offset(rec, "reason_alt"), blue, atol=1e-6)
    np.testing.assert_allclose(offset(rec, "visual"), blue, atol=1e-6)
    np.testing.assert_allclose(offset(replace(rec, drawn_kind="own"), "visual"), red, atol=1e-6)
    steer = replace(rec, steer_episode=True, own_target="yellow_ball")
    np.testing.assert_allclose(offset(steer, "reason"), rec.objects_m[LOCATED.index("yellow_ball")] - rec.tcp_m,
                               atol=1e-6)
    assert offset(recs[1], "reason") is None            # data made before 3-D positions were recorded
    ex = builder.build(rec, np.arange(100) % 7, "visual")
    first, last = ex.action_span
    action_w = TrainConfig().loss_weights["action"]
    assert all(ex.weights[i + 1] == action_w for i in range(first, last + 1)) and last + 2 == len(ex.ids)


def test_the_offset_head_learns_where_the_acted_on_object_is(pieces):
    from app.sim.train import OFFSET_SCALE_M, OffsetHead
    tokenizer, processor, stats_dict, _, builder, recs = pieces
    torch.manual_seed(0)
    model = small_model(tokenizer, stats_dict)
    # four samples, each with its own image and its own offset: the head must tell them apart
    batch = []
    for i, (r, kind) in enumerate(zip(recs, ("reason", "visual", "reason_alt", "reason"))):
        moved = with_positions(r)
        moved = replace(moved, tcp_m=moved.tcp_m + np.array([0.03 * i, -0.02 * i, -0.04 * i]))
        batch.append(builder.build(moved, np.arange(100) % 7, kind))
    head = OffsetHead(SMALL.llm_width)
    one = processor([builder.blank], "x")
    args = (one.pooled_patches_idx, one.crops.shape[1], tokenizer.ids.eos)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    errors = []
    for _ in range(60):
        loss, info = batch_loss(model, batch, *args, offset=head, offset_weight=3.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(info["offset_error_cm"])
    assert errors[0] > 5.0 and errors[-1] < 0.3 * errors[0], (errors[0], errors[-1])
    assert OFFSET_SCALE_M == 0.05
    _, plain = batch_loss(model, batch, *args)
    assert "offset_loss" not in plain


def test_offset_weight_refuses_data_without_3d_positions(tmp_path):
    import pickle
    from app.sim.train import data_key, train
    cfg = TrainConfig(offset_weight=1.0, steps=1, vision_steps=0, shape=SMALL)
    recs = [record(i) for i in range(4)]              # made the way data was before 3-D positions were kept
    cache = tmp_path / "d.pkl"
    with cache.open("wb") as f:
        pickle.dump((data_key(cfg.data), recs), f)
    with pytest.raises(ValueError, match="3-D positions"):
        train(cfg, tmp_path / "out", log=lambda *_: None, data_cache=cache)


def test_the_data_cache_key_follows_the_policys_weights_not_its_path(tmp_path):
    """DAgger data depends on what the driving checkpoint does: a copy of it reuses the cache, other
    weights do not."""
    import shutil
    from app.sim.train import policy_digest
    from tests.checkpoints import TINY_MODEL
    shutil.copytree(TINY_MODEL, tmp_path / "a")
    shutil.copytree(TINY_MODEL, tmp_path / "b")
    assert policy_digest(tmp_path / "a") == policy_digest(tmp_path / "b") == policy_digest(TINY_MODEL)
    f = sorted((tmp_path / "b").glob("*.safetensors"))[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert policy_digest(tmp_path / "b") != policy_digest(tmp_path / "a")


def test_steered_dagger_episodes_change_the_data_key_and_none_keep_the_keys_of_older_caches():
    """A cache written before ``policy_steer_episodes`` existed had no such key; with none asked for the key
    is still that one, with some it is another (and the command line sets them only with --dagger-from)."""
    from app.sim.train import data_key, parse_command
    from tests.checkpoints import TINY_MODEL
    assert "policy_steer_episodes" not in json.loads(data_key(DataConfig()))
    dagger = DataConfig(policy=str(TINY_MODEL), policy_episodes=8)
    assert data_key(replace(dagger, policy_steer_episodes=4)) != data_key(dagger)
    assert json.loads(data_key(replace(dagger, policy_steer_episodes=4)))["policy_steer_episodes"] == 4
    assert parse_command(["--dagger-steer-episodes", "40"])[0].data.policy_steer_episodes == 0
    cfg, _ = parse_command(["--dagger-from", str(TINY_MODEL), "--dagger-steer-episodes", "40"])
    assert (cfg.data.policy_episodes, cfg.data.policy_steer_episodes) == (240, 40)


def test_the_data_seed_defaults_to_the_runs_seed_and_can_be_another():
    """``--seed 1 --data-seed 0`` trains another seed on the data (and the ``--data-cache``) of ``--seed 0``."""
    from app.sim.train import data_config, parse_command
    plain, _ = parse_command(["--seed", "3"])
    assert plain.data_seed is None and data_config(plain).seed == 3
    other, _ = parse_command(["--seed", "1", "--data-seed", "0"])
    assert (other.seed, other.data_seed, data_config(other).seed) == (1, 0, 0)
    assert data_config(other) == data_config(parse_command([])[0])


def test_the_command_line_sets_the_sample_mix_and_refuses_a_bad_one(capsys):
    from app.sim.train import parse_command
    assert parse_command(["--mix", "0.3,0.45,0.25"])[0].mix == (0.3, 0.45, 0.25)
    assert parse_command([])[0].mix == TrainConfig().mix
    for bad in ("0.5,0.5,0.5", "0.5,0.5", "a,b,c", "1.2,-0.2,0"):
        with pytest.raises(SystemExit):
            parse_command(["--mix", bad])
        assert "three shares that sum to 1" in capsys.readouterr().err


def test_the_command_line_sets_how_far_beside_a_miss_closes_and_refuses_a_bad_range(capsys):
    from app.sim.train import parse_command
    assert parse_command(["--miss-m", "0.02,0.08"])[0].data.miss_m == (0.02, 0.08)
    assert parse_command([])[0].data.miss_m == DataConfig().miss_m
    for bad in ("0.08,0.02", "0,0.05", "0.02", "a,b", "0.02,0.9"):
        with pytest.raises(SystemExit):
            parse_command(["--miss-m", bad])
        assert "--miss-m wants LO,HI" in capsys.readouterr().err


def test_the_command_line_ends_data_episodes_once_an_object_is_lost_unless_told_not_to():
    """The bundled recipe's default since 2026-12-06; the dataclass keeps the plain pipeline's."""
    from app.sim.train import parse_command
    assert parse_command([])[0].data.end_lost is True
    assert parse_command(["--no-end-lost"])[0].data.end_lost is DataConfig().end_lost is False


def test_the_wrist_cameras_field_of_view_is_a_data_setting_recorded_and_rendered_again(tmp_path):
    """``--wrist-fovy``: part of the data's key (a cache of the default keeps its older key), recorded in
    ``config.json``, and the eval's and the station's sim cells render the wrist camera the checkpoint saw."""
    import numpy as np
    from app.config import CameraConfig, SimTaskConfig
    from app.devices.factory import make_sim_cell
    from app.sim import scene
    from app.sim.datagen import WRIST_SIZE
    from app.sim.depth_vq import VQTrainConfig
    from app.sim.eval import Evaluator
    from app.sim.train import data_key, parse_command, train
    assert "wrist_fovy_deg" not in json.loads(data_key(DataConfig()))
    cfg58 = parse_command(["--wrist-fovy", "58"])[0]
    assert cfg58.data.wrist_fovy_deg == 58.0 == json.loads(data_key(cfg58.data))["wrist_fovy_deg"]
    # the command's default is the bundled recipe's D405; d435 names the 42.6° of the recipes before it exactly
    assert parse_command([])[0].data.wrist_fovy_deg == scene.D405_FOVY_DEG == 58.0
    assert parse_command(["--wrist-fovy", "d435"])[0].data.wrist_fovy_deg == DataConfig().wrist_fovy_deg \
        == scene.FOVY_DEG
    assert parse_command(["--wrist-fovy", "D405"])[0].data.wrist_fovy_deg == 58.0
    data = DataConfig(episodes_per_task=0, steer_episodes=2, max_steps=6, workers=1, record_prob=1.0,
                      wrist_fovy_deg=58.0)
    train(TrainConfig(steps=1, batch=4, shape=SMALL, vision_steps=0, data=data, vq=VQTrainConfig(steps=2, batch=4)),
          tmp_path / "w58", log=lambda m: None)
    training = json.loads((tmp_path / "w58" / "config.json").read_text())["training"]
    assert training["wrist_fovy_deg"] == 58.0
    w, h = WRIST_SIZE
    fy58 = (h / 2) / np.tan(np.radians(58.0) / 2)
    ev = Evaluator(tmp_path / "w58")
    try:
        assert ev.cell.intrinsics("wrist", w, h).fy == pytest.approx(fy58)
    finally:
        ev.close()
    for model_training, fovy in ((training, 58.0), (None, scene.FOVY_DEG)):
        cell = make_sim_cell(CameraConfig(type="sim"), SimTaskConfig(), "pick up the red cube", model_training)
        try:
            assert cell.intrinsics("wrist", w, h).fy == pytest.approx((h / 2) / np.tan(np.radians(fovy) / 2))
        finally:
            cell.close()


def test_the_command_line_refuses_a_wrist_field_of_view_it_cannot_render(capsys):
    from app.sim.train import parse_command
    for bad in ("0", "-5", "200", "wide", "nan", ""):
        with pytest.raises(SystemExit):
            parse_command(["--wrist-fovy", bad])
        assert "--wrist-fovy wants degrees in 10..120 or one of d435, d405" in capsys.readouterr().err


def test_dagger_refuses_a_checkpoint_that_saw_another_wrist_camera(tmp_path):
    """A two-camera checkpoint that saw the 42.6° wrist view must not drive data rendered at 58° (its states
    would be ones it never sees in the eval); a front-only one does not look at the wrist camera."""
    from app.sim.datagen import generate
    from tests.checkpoints import TINY_MODEL, tiny_with_cameras
    cfg = DataConfig(episodes_per_task=0, steer_episodes=0, workers=1, policy_episodes=1, policy_steps=2,
                     wrist_fovy_deg=58.0, max_steps=2, record_prob=1.0)
    two_cameras = str(tiny_with_cameras(tmp_path, ["front", "wrist"]))
    with pytest.raises(ValueError, match="42.6° wrist camera; this data renders a 58.0° one"):
        generate(replace(cfg, policy=two_cameras))
    # from a pool worker too (its error reaches the caller, and the chunks not started are dropped)
    with pytest.raises(ValueError, match="42.6° wrist camera; this data renders a 58.0° one"):
        generate(replace(cfg, policy=two_cameras, workers=2, steer_episodes=3))
    assert generate(replace(cfg, policy=str(TINY_MODEL)))          # front only: runs

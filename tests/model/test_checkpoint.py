import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from model.actions import UnknownUnnormKeyError
from model.checkpoint import (CheckpointError, expected_shapes, load_checkpoint, main, write_tiny_checkpoint)
from model.config import ConfigError, shape_7b_d
from model.processor import reasoning_prompt
from model.tokenizer import TokenizerError


@pytest.fixture
def ckpt(tiny_dir, tmp_path):
    """A private copy that a test may damage."""
    return shutil.copytree(tiny_dir, tmp_path / "ckpt")


def test_load_preprocess_forward_logits(tiny, rgb):
    inp = tiny.processor([rgb], reasoning_prompt("pick up the red cube", 1))
    with torch.inference_mode():
        logits = tiny.model.logits(tiny.model(tiny.model.embed(inp.input_ids, inp.crops, inp.pooled_patches_idx)))
    assert logits.shape == (1, inp.length, tiny.config.llm_config.vocab_size)
    assert torch.isfinite(logits).all()
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in tiny.model.parameters())
    assert tiny.depth_decoder is not None


def test_loaded_weights_equal_written_weights(tiny, tiny_dir):
    written = {}
    for f in sorted(tiny_dir.glob("model-*.safetensors")):
        written.update(load_file(str(f)))
    loaded = tiny.model.state_dict()
    assert set(written) == set(loaded)
    assert all(torch.equal(written[k], loaded[k]) for k in written)
    assert len(list(tiny_dir.glob("model-*-of-00002.safetensors"))) == 2


def test_writer_is_deterministic(tmp_path):
    a = write_tiny_checkpoint(tmp_path / "a", seed=3)
    b = write_tiny_checkpoint(tmp_path / "b", seed=3)
    c = write_tiny_checkpoint(tmp_path / "c", seed=4)
    for name in ("model-00001-of-00002.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "model-00001-of-00002.safetensors").read_bytes() != (c / "model-00001-of-00002.safetensors").read_bytes()


def test_olmo2_tiny_checkpoint_loads_and_runs(tmp_path, rgb):
    ck = load_checkpoint(write_tiny_checkpoint(tmp_path / "o", variant="olmo2"))
    assert ck.config.variant == "olmo2"
    inp = ck.processor([rgb], reasoning_prompt("open the drawer", 1))
    with torch.inference_mode():
        out = ck.model.logits(ck.model(ck.model.embed(inp.input_ids, inp.crops, inp.pooled_patches_idx)))
    assert out.shape[-1] == 768


def test_7b_d_key_shapes_match_the_reference_layout():
    """Derived 7B-D shapes from reference/molmoact-internals.md, on the meta device (no memory)."""
    s = expected_shapes(shape_7b_d())
    assert s["lm_head.weight"] == (152064, 3584)
    assert s["model.transformer.wte.embedding"] == (152064, 3584)
    assert s["model.transformer.wte.new_embedding"] == (128, 3584)
    assert s["model.transformer.blocks.27.self_attn.att_proj.weight"] == (4608, 3584)
    assert s["model.transformer.blocks.0.self_attn.att_proj.bias"] == (4608,)
    assert s["model.transformer.blocks.0.mlp.ff_proj.weight"] == (37888, 3584)
    assert s["model.transformer.blocks.0.mlp.ff_out.weight"] == (3584, 18944)
    assert s["model.vision_backbone.image_vit.positional_embedding"] == (729, 1152)
    assert s["model.vision_backbone.image_vit.patch_embedding.weight"] == (1152, 588)
    assert "model.vision_backbone.image_vit.transformer.resblocks.24.attention.wq.weight" in s
    assert "model.vision_backbone.image_vit.transformer.resblocks.25.attention.wq.weight" not in s
    assert s["model.vision_backbone.image_pooling_2d.wq.weight"] == (1152, 2304)
    assert s["model.vision_backbone.image_projector.w1.weight"] == (18944, 1152)
    assert s["model.vision_backbone.image_projector.w2.weight"] == (3584, 18944)
    n = sum(int(np.prod(v)) for v in s.values())
    assert 8.0e9 < n < 8.2e9   # the HF collection lists each checkpoint at "8B"


# -- bad input: one clear error naming the file or key --------------------------------------------
def test_missing_directory_and_files(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_checkpoint(tmp_path / "nope")
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_checkpoint(ckpt)


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(ckpt)


def test_missing_shard(ckpt):
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_checkpoint(ckpt)


def test_truncated_shard(ckpt):
    shard = ckpt / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors.*truncated or corrupt"):
        load_checkpoint(ckpt)


def test_shape_mismatch_names_key(ckpt):
    shard = ckpt / "model-00001-of-00002.safetensors"
    state = load_file(str(shard))
    key = next(iter(state))
    state[key] = torch.zeros(3, 3)
    save_file(state, str(shard))
    with pytest.raises(CheckpointError, match=f"shape mismatch for '{key}'"):
        load_checkpoint(ckpt)


def test_missing_and_unexpected_keys(ckpt):
    shard = ckpt / "model-00002-of-00002.safetensors"
    state = load_file(str(shard))
    key = sorted(state)[0]
    value = state.pop(key)
    save_file(state, str(shard))
    with pytest.raises(CheckpointError, match=f"missing keys.*{key}"):
        load_checkpoint(ckpt)
    state[key] = value
    state["model.transformer.blocks.99.extra.weight"] = torch.zeros(2)
    save_file(state, str(shard))
    with pytest.raises(CheckpointError, match="unexpected key 'model.transformer.blocks.99.extra.weight'"):
        load_checkpoint(ckpt)


def test_unknown_architecture(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["LlavaForConditionalGeneration"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown architecture"):
        load_checkpoint(ckpt)


def test_tokenizer_inconsistent_with_config(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["image_patch_id"] = cfg["image_patch_id"] + 1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="image_patch_id"):
        load_checkpoint(ckpt)
    (ckpt / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_checkpoint(ckpt)


def test_unknown_unnorm_key(tiny):
    with pytest.raises(UnknownUnnormKeyError, match="'bridge_orig'.*fractal20220817_data"):
        tiny.action_stats("bridge_orig")
    assert tiny.action_stats(None).action_dim == 7


def test_failed_load_leaves_previous_model_in_use(tiny, ckpt, rgb):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    (ckpt / "model-00001-of-00002.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.is_meta for p in tiny.model.parameters())


def test_no_depth_decoder_is_a_warning_not_an_error(ckpt):
    (ckpt / "vae-final.safetensors").unlink()
    with pytest.warns(UserWarning, match="no depth decoder"):
        ck = load_checkpoint(ckpt)
    assert ck.depth_decoder is None


def test_cli_write_and_inspect(tmp_path, capsys):
    assert main(["write-tiny", str(tmp_path / "t"), "--seed", "1"]) == 0
    assert main(["inspect", str(tmp_path / "t")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["variant"] == "qwen2" and info["depth_decoder"] is True and info["parameters"] > 100_000
    assert main(["inspect", str(tmp_path / "missing")]) == 2


def test_cuda_requested_without_gpu_is_a_clear_error(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CheckpointError, match="no CUDA GPU"):
        load_checkpoint(tiny_dir, device="cuda")


def test_malformed_norm_stats_name_the_key(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["norm_stats"]["bridge_orig"] = {"action": {"q01": ["a"] * 7, "q99": [1] * 7}}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="norm_stats\\['bridge_orig'\\]"):
        load_checkpoint(ckpt)


def test_preprocessor_geometry_must_fit_the_vit(ckpt):
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    pre["base_image_input_size"] = [336, 336]
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        load_checkpoint(ckpt)


def test_corrupt_depth_decoder_is_a_checkpoint_error(ckpt):
    (ckpt / "vae-final.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="vae-final.safetensors"):
        load_checkpoint(ckpt)


def test_tied_checkpoint_without_lm_head_loads(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (ckpt / "config.json").write_text(json.dumps(cfg))
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shard = ckpt / index["weight_map"].pop("lm_head.weight")
    state = load_file(str(shard))
    del state["lm_head.weight"]
    save_file(state, str(shard))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    ck = load_checkpoint(ckpt)
    assert torch.equal(ck.model.lm_head.weight, ck.model.model.transformer.wte.embedding)

import json

import pytest

from model.config import ConfigError, MolmoActConfig, shape_7b_d, shape_7b_o, tiny_config


def official_dict() -> dict:
    """A 7B-D config.json as the reference's converter writes it, HF bookkeeping keys included."""
    d = shape_7b_d().to_dict()
    d.update({"transformers_version": "4.52.4", "torch_dtype": "bfloat16", "use_cache": True,
              "auto_map": {"AutoConfig": "configuration_molmoact.MolmoActConfig"}})
    d["llm_config"].update({"embedding_dropout": 0.0, "attention_dropout": 0.0, "residual_dropout": 0.0,
                            "initializer_range": 0.02, "use_cache": True})
    d["vit_config"].update({"attention_dropout": 0.0, "residual_dropout": 0.0, "initializer_range": 0.02})
    d["adapter_config"].update({"image_feature_dropout": 0.0, "attention_dropout": 0.0})
    return d


def test_reads_official_7b_d_config(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(official_dict()))
    cfg = MolmoActConfig.from_json(p)
    assert cfg.variant == "qwen2"
    assert cfg.llm_config.hidden_size == 3584 and cfg.llm_config.num_key_value_heads == 4
    assert cfg.vit_layer_indices == [24, 18]      # (-3, -9) on a 27-block tower
    assert cfg.vit_layers_built == 25
    assert cfg.image_patch_id == 152066


def test_round_trip_and_olmo_variant():
    for cfg in (shape_7b_d(), shape_7b_o(), tiny_config("olmo2"), tiny_config("qwen2")):
        again = MolmoActConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    assert shape_7b_o().variant == "olmo2" and shape_7b_o().llm_config.use_qk_norm


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(model_type="llava"), "unknown architecture"),
    (lambda d: d.update(architectures=["Qwen2ForCausalLM"]), "unknown architecture"),
    (lambda d: d.pop("llm_config"), "llm_config"),
    (lambda d: d["llm_config"].update(num_attention_heads=5), "num_attention_heads"),
    (lambda d: d.update(image_patch_id=5), "image_patch_id"),
    (lambda d: d["adapter_config"].update(vit_layers=[-30]), "vit_layers"),
    (lambda d: d["llm_config"].update(rope_scaling={"rope_type": "yarn"}), "yarn"),
])
def test_bad_config_names_file_and_field(tmp_path, edit, needle):
    d = official_dict()
    edit(d)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        MolmoActConfig.from_json(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MolmoActConfig.from_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        MolmoActConfig.from_json(tmp_path / "config.json")

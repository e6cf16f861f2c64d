"""SmolLM2Config reads the released config.json and the nanotron pretraining YAML, and refuses bad ones."""
import json
from pathlib import Path

import pytest
import yaml

from smollm2 import SmolLM2Config, transformers_config

DATA = Path(__file__).resolve().parent.parent / "data"


def test_released_and_pretraining_files():
    released = SmolLM2Config.from_file(DATA / "config.json")
    pretrain = SmolLM2Config.from_file(DATA / "config_smollm2_135M.yaml")
    assert released == SmolLM2Config()
    assert (released.rope_theta, released.max_position_embeddings) == (100000.0, 8192)
    assert (pretrain.rope_theta, pretrain.max_position_embeddings) == (10000.0, 2048)
    assert pretrain.initializer_range == pytest.approx(0.041666, abs=1e-6)


def test_to_dict_round_trips_and_transformers_reads_it():
    cfg = SmolLM2Config()
    d = cfg.to_dict()
    assert SmolLM2Config.from_dict(d) == cfg
    hf = transformers_config(cfg)
    assert (hf.hidden_size, hf.num_key_value_heads, hf.tie_word_embeddings) == (576, 3, True)
    # every field reads back under its own name; transformers >= 5 files rope_theta in rope_parameters
    assert hf.rope_parameters == {"rope_theta": 100000.0, "rope_type": "default"}
    assert {k: getattr(hf, k) for k in d if k not in ("architectures", "rope_theta", "rope_scaling")} == \
        {k: v for k, v in d.items() if k not in ("architectures", "rope_theta", "rope_scaling")}
    assert SmolLM2Config.from_dict(hf.to_dict()) == cfg                   # and back
    with pytest.raises(ValueError, match=r"config: expected a SmolLM2Config, got dict"):
        transformers_config(d)


def test_yaml_missing_keys_and_sections(tmp_path):
    doc = yaml.safe_load((DATA / "config_smollm2_135M.yaml").read_text())
    del doc["model"]["model_config"]["num_key_value_heads"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="num_key_value_heads"):
        SmolLM2Config.from_file(p)
    p.write_text("optimizer: {}\n")
    with pytest.raises(ValueError, match="model.model_config"):
        SmolLM2Config.from_file(p)


def test_json_problems(tmp_path):
    d = json.loads((DATA / "config.json").read_text())
    p = tmp_path / "config.json"
    for change, match in [({"model_type": "gpt2"}, "model_type"), ({"rope_scaling": {"type": "linear"}}, "rope_scaling"),
                          ({"attention_bias": True}, "attention_bias"), ({"hidden_size": 100}, "hidden_size")]:
        p.write_text(json.dumps({**d, **change}))
        with pytest.raises(ValueError, match=match):
            SmolLM2Config.from_file(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SmolLM2Config.from_file(p)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        SmolLM2Config.from_file(tmp_path / "nope.json")


def test_transformers5_config_json_and_hf_defaults(tmp_path):
    """transformers >= 5 nests rope_theta in rope_parameters; keys left out take LlamaConfig's defaults."""
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rope_theta=5000.0).save_pretrained(tmp_path)
    cfg = SmolLM2Config.from_file(tmp_path / "config.json")
    assert cfg.rope_theta == 5000.0
    minimal = {k: getattr(SmolLM2Config(), k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                          "num_hidden_layers", "num_attention_heads",
                                                          "num_key_value_heads")}
    cfg = SmolLM2Config.from_dict(minimal)
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.tie_word_embeddings) == (10000.0, 1e-6, False)

"""The `trl-rewards` entry point: YAML and flags set the same config fields; train and merge run end to end (the
demo has its own tests in test_demo.py)."""

import json

import pytest
import yaml

from trl_rewards.modeling import load_reward_model
from trl_rewards.scripts.cli import main
from trl_rewards.testing import save_tiny, tiny_llama_reward_model


@pytest.fixture
def tiny_dir(tmp_path):
    model, tok = tiny_llama_reward_model()
    return save_tiny(model, tok, tmp_path / "tiny")


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(12):
            f.write(json.dumps({"prompt": f"Q{i}? ", "chosen": "yes " * (1 + i % 3), "rejected": "no"}) + "\n")
    return str(path)


def test_train_bt_from_yaml_with_cli_override(tmp_path, tiny_dir, pairs_file):
    config = {
        "model_name_or_path": tiny_dir,
        "dataset_name": pairs_file,
        "eval_dataset_name": pairs_file,
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "report_to": "none",
        "save_strategy": "no",
        "label_smoothing": 0.05,
    }
    config_path = tmp_path / "bt.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["train", "bt", "--config", str(config_path), "--max_length", "12", "--too_long", "drop"]) == 0
    saved_args = __import__("torch").load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert (saved_args.max_length, saved_args.too_long, saved_args.label_smoothing) == (12, "drop", 0.05)
    model, _ = load_reward_model(str(tmp_path / "out"))
    assert model.config.reward_stats_source == "eval"


def test_train_bt_rejects_bad_option_before_loading(tmp_path, pairs_file, capsys):
    """`choices` metadata reaches argparse; range checks come from the config's __post_init__ (YAML too)."""
    base = [
        "train",
        "bt",
        "--model_name_or_path",
        "does-not-exist",
        "--dataset_name",
        pairs_file,
        "--output_dir",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit):
        main(base + ["--too_long", "clip"])
    assert "invalid choice: 'clip'" in capsys.readouterr().err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("label_smoothing: 0.7\n")
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 0.5\)"):
        main(base + ["--config", str(bad_yaml)])


def test_train_bt_lora_then_merge(tmp_path, tiny_dir, pairs_file):
    out, merged = str(tmp_path / "adapter"), str(tmp_path / "merged")
    argv = [
        "train",
        "bt",
        "--model_name_or_path",
        tiny_dir,
        "--dataset_name",
        pairs_file,
        "--output_dir",
        out,
        "--max_steps",
        "1",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--use_peft",
        "--lora_r",
        "4",
    ]
    assert main(argv) == 0
    assert main(["merge", out, merged]) == 0
    model, _ = load_reward_model(merged)
    assert model.config.reward_stats_source == "train"  # no eval set: statistics come from the train set


def test_unknown_commands(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["train", "xyz"]) == 2
    assert main([]) == 0
    assert "train bt" in capsys.readouterr().out


def test_trust_remote_code_reaches_the_model_loader(tmp_path, tiny_dir, pairs_file, monkeypatch):
    """`--trust_remote_code true` used to be parsed and then ignored; it now reaches `from_pretrained` (model and
    tokenizer), as in TRL's own scripts."""
    import trl_rewards.scripts.train as train_module

    seen = {}
    real = train_module.load_reward_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{k: v for k, v in kwargs.items() if k != "trust_remote_code"})

    monkeypatch.setattr(train_module, "load_reward_model", spy)
    argv = ["train", "bt", "--model_name_or_path", tiny_dir, "--dataset_name", pairs_file]
    argv += ["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--report_to", "none", "--save_strategy", "no"]
    assert main(argv + ["--trust_remote_code", "true", "--dataloader_pin_memory", "false"]) == 0
    assert seen.get("trust_remote_code") is True

"""`trl-rewards train pairwise`: YAML and flags set the pairwise config, the model (full or LoRA adapter) is saved
and scores with `PairwiseScorer`, bad rows fail before any model loads."""

import json
import os

import pytest
import torch
import yaml

from trl_rewards.inference.pairwise_scoring import PairwiseScorer
from trl_rewards.scripts.cli import main
from trl_rewards.testing import save_tiny, tiny_bert_reward_model


@pytest.fixture
def tiny_dir(tmp_path):
    return save_tiny(*tiny_bert_reward_model(), tmp_path / "tiny")


def _write(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture
def pairs_file(tmp_path):
    rows = [
        {
            "chosen": f"\n\nHuman: Q{i}?\n\nAssistant: yes" + "!" * (i % 3),
            "rejected": f"\n\nHuman: Q{i}?\n\nAssistant: no",
        }
        for i in range(12)
    ]
    return _write(tmp_path / "pairs.jsonl", rows)


def test_train_pairwise_from_yaml_with_flag_override(tmp_path, tiny_dir, pairs_file):
    config = {
        "model_name_or_path": tiny_dir,
        "dataset_name": pairs_file,
        "eval_dataset_name": pairs_file,
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "report_to": "none",
        "save_strategy": "no",
        "label_smoothing": 0.05,
        "dataloader_pin_memory": False,
    }
    config_path = tmp_path / "pairwise.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["train", "pairwise", "--config", str(config_path), "--max_length", "128"]) == 0
    saved = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert type(saved).__name__ == "PairwisePreferenceConfig"
    assert (saved.max_length, saved.label_smoothing) == (128, 0.05)
    scorer = PairwiseScorer.from_pretrained(str(tmp_path / "out"))
    forward = scorer.win_probability(["Q?"], ["yes"], ["no"])[0]
    assert forward + scorer.win_probability(["Q?"], ["no"], ["yes"])[0] == 1.0


def test_train_pairwise_lora_adapter(tmp_path, tiny_dir, pairs_file):
    argv = ["train", "pairwise", "--model_name_or_path", tiny_dir, "--dataset_name", pairs_file]
    argv += ["--output_dir", str(tmp_path / "adapter"), "--max_steps", "1", "--report_to", "none"]
    argv += ["--save_strategy", "no", "--dataloader_pin_memory", "false", "--use_peft", "true"]
    argv += ["--lora_r", "4", "--lora_target_modules", "all-linear"]
    assert main(argv) == 0
    assert os.path.isfile(tmp_path / "adapter" / "adapter_config.json")
    probabilities = PairwiseScorer.from_pretrained(str(tmp_path / "adapter")).win_probability(["Q"], ["a"], ["b"])
    assert 0 < probabilities[0] < 1


def test_bad_rows_fail_before_the_model_loads(tmp_path):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "same", "rejected": "same"}]
    argv = ["train", "pairwise", "--model_name_or_path", "does-not-exist", "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="row 1"):
        main(argv + ["--dataset_name", _write(tmp_path / "bad.jsonl", rows)])
    margin = [{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0}]
    with pytest.raises(ValueError, match="margin"):
        main(argv + ["--dataset_name", _write(tmp_path / "margin.jsonl", margin)])

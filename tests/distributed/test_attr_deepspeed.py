"""`train attr` under DeepSpeed ZeRO-3 with two real processes on CPU (gloo): training completes, and the saved model
is a stock 2-output regression head whose attribute statistics, gathered over both ranks' shards of the eval set, equal
those of the reloaded model scoring that eval set in a plain process."""

import json

import deepspeed  # noqa: F401  (always installed by ./dev: a missing or broken DeepSpeed fails here, never skips)
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from trl_rewards.inference.attribute_scoring import AttributeScorer
from trl_rewards.testing import save_tiny, tiny_llama_config, tiny_llama_tokenizer

pytestmark = [pytest.mark.multiprocess]


def _rows(n):
    return [
        {
            "prompt": f"Q{i}: ",
            "completion": "ab" * (1 + i % 3),
            "quality": None if i % 4 == 1 else float(i % 5),
            "length": 1.0 + i % 3,
        }
        for i in range(n)
    ]


def test_train_attr_zero3_two_processes(launcher, tmp_path):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(tokenizer, num_labels=2))
    base = save_tiny(model, tokenizer, tmp_path / "base")
    for name, n in (("train", 32), ("eval", 10)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(n)) + "\n")
    out = tmp_path / "out"
    cli = ["-m", "trl_rewards.scripts.cli"]
    launcher.run(
        [*launcher.deepspeed(3), *cli, "train", "attr", "--model_name_or_path", base]
        + ["--dataset_name", str(tmp_path / "train.jsonl"), "--eval_dataset_name", str(tmp_path / "eval.jsonl")]
        + ["--attributes", "quality", "length", "--output_dir", str(out), "--max_steps", "3"]
        + ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "3", "--logging_steps", "1"]
        + ["--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false", "--save_strategy", "no"],
        tmp_path,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["attribute_names"] == ["quality", "length"]
    scorer = AttributeScorer.from_pretrained(str(out))
    rows = _rows(10)
    scores = scorer.score_attributes([r["prompt"] for r in rows], [r["completion"] for r in rows])
    # the statistics were gathered over both ranks' shards of the eval set, each row once
    np.testing.assert_allclose(config["attribute_means"], scores.mean(0), atol=1e-4)
    np.testing.assert_allclose(config["attribute_stds"], scores.std(0), atol=1e-4)

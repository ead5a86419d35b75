"""BradleyTerryTrainer with `prefix_sharing=True` under DeepSpeed ZeRO-3, two real processes on CPU (gloo): the packed
rows (block 4-D mask, position ids, the `score` head's output captured by a hook on the partitioned model) train
exactly like the unshared path in a single process with the same global batch.

Tolerance: 1e-5 absolute on each logged loss, as in `test_deepspeed.py`: fp32 on CPU, the same samples per global
step (sequential sampler, 2 x 4 rows vs 1 x 8 rows); the packed forward differs from the unshared one by float
summation order only, and the cross-rank gradient reduction by its order. A wrong gradient shows from the second
step on, since each step's loss is computed with the weights the previous gradients made.

This file is also the worker that `accelerate launch` runs in each process (`python this_file.py --out DIR ...`).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import deepspeed  # noqa: F401  (always installed by ./dev: a missing or broken DeepSpeed fails here, never skips)
import pytest

pytestmark = [pytest.mark.multiprocess]
STEPS, BATCH = 3, 8


def pairs():
    """Pairs whose prompts are long next to their answers, of mixed lengths."""
    rows = []
    for i in range(STEPS * BATCH):
        prompt = f"Question {i}: " + "what comes next in the list? " * (1 + i % 3)
        rows.append({"prompt": prompt, "chosen": "good answer " * (1 + i % 2), "rejected": "bad " * (1 + i % 4)})
    return rows


def train(model_dir: str, out: str, batch_size: int, prefix_sharing: bool) -> dict:
    """Trains `STEPS` steps from the saved model; returns the logged losses and how the run was distributed."""
    import torch.distributed as dist
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

    args = BradleyTerryConfig(
        output_dir=os.path.join(out, "run"),
        per_device_train_batch_size=batch_size,
        max_steps=STEPS,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        bf16=False,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential",
        dataloader_pin_memory=False,
        disable_tqdm=True,
        store_reward_stats=False,
        prefix_sharing=prefix_sharing,
    )
    trainer = BradleyTerryTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1),
        args=args,
        train_dataset=Dataset.from_list(pairs()),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return {
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "collator": type(trainer.data_collator).__name__,
        "zero_stage": plugin.zero_stage if plugin is not None else None,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "rank": dist.get_rank() if dist.is_initialized() else 0,
    }


def test_zero3_prefix_sharing_matches_single_process_unshared(launcher, tmp_path):
    from trl_rewards.testing import save_tiny, tiny_llama_reward_model

    model_dir = save_tiny(*tiny_llama_reward_model(), tmp_path / "tiny")
    out = tmp_path / "zero3"
    script = [str(Path(__file__).resolve()), "--model", model_dir, "--out", str(out), "--batch_size", str(BATCH // 2)]
    launcher.run([*launcher.deepspeed(3), *script, "--prefix_sharing"], tmp_path, timeout=300)
    reference = train(model_dir, str(tmp_path / "single"), BATCH, prefix_sharing=False)
    assert len(reference["losses"]) == STEPS and reference["world_size"] == 1
    for rank in (0, 1):
        run = json.loads((out / f"rank{rank}.json").read_text())
        assert run["zero_stage"] == 3 and run["world_size"] == 2 and run["collator"] == "PrefixSharingCollator"
        assert run["losses"] == pytest.approx(reference["losses"], abs=1e-5)
    assert len(set(reference["losses"])) == STEPS  # the weights moved: steps 2 and 3 check the gradients


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--prefix_sharing", action="store_true")
    cli = parser.parse_args()
    result = train(cli.model, cli.out, cli.batch_size, cli.prefix_sharing)
    os.makedirs(cli.out, exist_ok=True)
    with open(os.path.join(cli.out, f"rank{result['rank']}.json"), "w") as f:
        json.dump(result, f)
    sys.exit(0)

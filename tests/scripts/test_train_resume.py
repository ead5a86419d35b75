"""`trl-rewards train`: a run killed with SIGKILL resumes exactly from its checkpoint, and one seed gives one model
(the reward head of a base model is initialized after seeding)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from trl_rewards.scripts.cli import main
from trl_rewards.testing import save_tiny, tiny_llama_config, tiny_llama_reward_model, tiny_llama_tokenizer

STEPS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"prompt": f"Q{i}? ", "chosen": "yes " * (1 + i % 3), "rejected": "no " * (1 + i % 2)}) + "\n"
            for i in range(64)
        )
    )
    return root, save_tiny(*tiny_llama_reward_model(), root / "rm"), str(pairs)


def _argv(model, data, out, *extra):
    return [
        "train", "bt", "--model_name_or_path", model, "--dataset_name", data, "--output_dir", str(out),
        "--max_steps", str(STEPS), "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
        "--logging_steps", "1", "--save_steps", "2", "--report_to", "none", "--seed", "7",
        "--dataloader_pin_memory", "false", "--store_reward_stats", "false", *extra,
    ]  # fmt: skip


def _run(argv, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "trl_rewards.scripts.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        **kwargs,
    )


def _losses(checkpoint: Path) -> dict[int, float]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(setup):
    root, model, data = setup
    reference = _run(_argv(model, data, root / "reference"))
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out

    killed_dir = root / "killed"
    victim = _run(_argv(model, data, killed_dir))
    deadline = time.time() + 300
    while not (killed_dir / "checkpoint-4" / "trainer_state.json").exists():
        assert victim.poll() is None and time.time() < deadline, "the run ended before its first checkpoints"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    saved = sorted(int(p.name.split("-")[1]) for p in killed_dir.glob("checkpoint-*"))
    assert saved and saved[-1] < STEPS, "the kill came after the last step: nothing to resume"

    resumed = _run(_argv(model, data, killed_dir, "--resume_from_checkpoint", "true"))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    # It restarted from the newest complete checkpoint, not from step 0 ...
    started = [line for line in out.splitlines() if line.startswith("resuming from")]
    assert len(started) == 1, out
    step = int(started[0].rsplit(" ", 1)[1])
    assert f"checkpoint-{step} " in started[0] and step in saved and 4 <= step < STEPS
    # ... and ended where the uninterrupted run did: every logged loss and every weight.
    assert _losses(killed_dir / f"checkpoint-{STEPS}") == pytest.approx(
        _losses(root / "reference" / f"checkpoint-{STEPS}")
    )
    final, expected = load_file(killed_dir / "model.safetensors"), load_file(root / "reference" / "model.safetensors")
    assert final.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], rtol=0, atol=0, msg=name)


def test_one_seed_gives_one_model(tmp_path):
    """A causal LM loaded as a reward model gets a new, random `score` head at load time. Two runs with `--seed 3`,
    started from different global RNG states, must end with identical weights (before the fix the head was drawn
    before anything was seeded, and the runs differed)."""
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    base = save_tiny(LlamaForCausalLM(tiny_llama_config(tokenizer)), tokenizer, tmp_path / "base")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n" for i in range(8)))
    weights = []
    for run, noise in enumerate((1, 2)):
        torch.manual_seed(noise)
        out = tmp_path / f"run{run}"
        argv = ["train", "bt", "--model_name_or_path", base, "--dataset_name", str(data), "--output_dir", str(out)]
        argv += ["--max_steps", "2", "--per_device_train_batch_size", "4", "--seed", "3", "--report_to", "none"]
        argv += ["--save_strategy", "no", "--dataloader_pin_memory", "false"]
        assert main(argv) == 0
        weights.append(load_file(out / "model.safetensors"))
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0, msg=name)

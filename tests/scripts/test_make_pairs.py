"""`trl-rewards make-pairs` on tiny models: sampled pairs are scored and selected as the rules say, the file trains
with `trl-rewards train bt` and with TRL's DPOTrainer, SPIN pairs put the reference first, and bad inputs fail before
any model loads."""

import json

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM, set_seed

from trl_rewards.data.loading import load_table
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.scripts.cli import main
from trl_rewards.scripts.make_pairs import MakePairsArguments, run_make_pairs, sample_completions
from trl_rewards.testing import save_tiny, tiny_llama_config, tiny_llama_reward_model, tiny_llama_tokenizer


def _policy():
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tokenizer)), tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return save_tiny(*_policy(), root / "policy"), save_tiny(*tiny_llama_reward_model(seed=1), root / "rm")


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def prompts_file(tmp_path):
    return _write(tmp_path / "prompts.jsonl", [{"prompt": f"Q{i}: what is {i}+1? ", "answer": str(i + 1)}
                                               for i in range(6)])  # fmt: skip


def _argv(policy, data, out, *extra):
    return ["make-pairs", "--model_name_or_path", policy, "--dataset_name", data, "--output", str(out),
            "--max_new_tokens", "8", "--num_generations", "4", *extra]  # fmt: skip


def test_best_worst_pairs_from_a_reward_model_train_bt_and_dpo(tmp_path, models, prompts_file):
    policy_dir, rm_dir = models
    out = tmp_path / "pairs.jsonl"
    assert main(_argv(policy_dir, prompts_file, out, "--reward_model", rm_dir)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 4 <= len(rows) <= 6 and {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} == set(rows[0])
    assert all(r["score_chosen"] > r["score_rejected"] and r["chosen"] != r["rejected"] for r in rows)
    # the recorded scores are the reward model's scores of exactly these texts
    reward = RewardModelFunction(rm_dir, device="cpu")
    rescored = reward(prompts=[r["prompt"] for r in rows] * 2, completions=[r["chosen"] for r in rows] +
                      [r["rejected"] for r in rows])  # fmt: skip
    assert rescored == pytest.approx([r["score_chosen"] for r in rows] + [r["score_rejected"] for r in rows], abs=1e-5)

    bt_dir = tmp_path / "bt"
    assert main(["train", "bt", "--model_name_or_path", rm_dir, "--dataset_name", str(out), "--output_dir",
                 str(bt_dir), "--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none",
                 "--save_strategy", "no"]) == 0  # fmt: skip
    assert (bt_dir / "model.safetensors").exists()
    _dpo_steps(policy_dir, str(out), tmp_path / "dpo")


def _dpo_steps(policy_dir, pairs_path, output_dir):
    from trl import DPOConfig, DPOTrainer

    policy = LlamaForCausalLM.from_pretrained(policy_dir)
    before = policy.lm_head.weight.detach().clone()
    args = DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True, bf16=False, logging_steps=1, dataloader_pin_memory=False,
        activation_checkpointing=False,
    )  # fmt: skip
    trainer = DPOTrainer(model=policy, args=args, train_dataset=load_table(pairs_path),
                         processing_class=tiny_llama_tokenizer())  # fmt: skip
    trainer.train()
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)
    assert not torch.equal(before, policy.lm_head.weight)


def test_spin_pairs_from_conversational_prompts_train_dpo(tmp_path, models):
    policy_dir, _ = models
    rows = [{"prompt": [{"role": "user", "content": f"Say {w}."}], "answer": f"{w}!"} for w in ("yes", "no", "hi")]
    out = tmp_path / "spin.jsonl"
    config = tmp_path / "spin.yaml"  # a --config YAML sets the same fields as flags
    config.write_text(yaml.safe_dump({"mode": "spin", "reference_column": "answer", "num_generations": 1}))
    argv = ["make-pairs", "--config", str(config), "--model_name_or_path", policy_dir, "--dataset_name",
            _write(tmp_path / "chat.jsonl", rows), "--output", str(out), "--max_new_tokens", "8"]  # fmt: skip
    assert main(argv) == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["chosen"] for p in pairs] == [[{"role": "assistant", "content": r["answer"]}] for r in rows]
    assert all(
        p["prompt"] == r["prompt"] and p["rejected"][0]["role"] == "assistant"
        for p, r in zip(pairs, rows, strict=True)
    )
    _dpo_steps(policy_dir, str(out), tmp_path / "dpo")


def test_local_judge_and_rule_reward_paths(tmp_path, models, prompts_file):
    """The policy judges itself (expected score of a random tiny judge: varied, so pairs are kept); a rule reward
    on random text scores every sample 0, so every prompt is a tie and nothing is written."""
    policy_dir, _ = models
    out = tmp_path / "judged.jsonl"
    summary = main(_argv(policy_dir, prompts_file, out, "--judge_model", policy_dir, "--max_samples", "3"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary == 0 and len(rows) == 3 and all(0 <= r["score_rejected"] < r["score_chosen"] <= 5 for r in rows)
    config = tmp_path / "rule.yaml"
    config.write_text(yaml.safe_dump({"answer_correctness": {}}))
    with pytest.raises(ValueError, match=r"skipped 6 prompts \(tie 6\): no pair to write"):
        main(_argv(policy_dir, prompts_file, tmp_path / "rule.jsonl", "--reward_config", str(config)))
    assert not (tmp_path / "rule.jsonl").exists()


class _LengthUnlessNoAnswer:
    """Length of the completion; `None` where the row's `answer` column is None (reads the row's columns)."""

    __name__ = "length"

    def __call__(self, prompts, completions, completion_ids=None, answer=None, **kwargs):
        assert len(completion_ids) == len(completions) and all(isinstance(i, list) for i in completion_ids)
        return [None if a is None else float(len(c)) for c, a in zip(completions, answer, strict=True)]


def test_python_reward_sees_the_row_columns_and_none_is_counted(tmp_path, models):
    policy_dir, _ = models
    data = _write(tmp_path / "p.jsonl", [{"prompt": "A ", "answer": "1"}, {"prompt": "B ", "answer": None}])
    args = MakePairsArguments(model_name_or_path=policy_dir, dataset_name=data, output=str(tmp_path / "o.jsonl"),
                              max_new_tokens=12, num_generations=4, min_gap=1.0)  # fmt: skip
    summary = run_make_pairs(args, reward=_LengthUnlessNoAnswer())
    assert summary["counts"] == {"kept": 1, "unscored": 1}
    (row,) = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["score_chosen"] == len(row["chosen"]) and row["score_rejected"] == len(row["rejected"])


def test_sampling_is_seeded():
    policy, tokenizer = _policy()
    runs = []
    for _ in range(2):
        set_seed(3)
        runs.append(sample_completions(policy, tokenizer, ["Hi ", "Q: "], 3, max_new_tokens=6, batch_size=1))
    assert runs[0] == runs[1] and len(runs[0][0]) == 2 and all(len(g) == 3 for g in runs[0][0])
    assert len({t for g in runs[0][0] for t in g}) > 1  # sampled, not greedy


@pytest.mark.parametrize(
    ("extra", "rows", "message"),
    [
        (["--reward_model", "x"], [{"text": "Q"}], "prompts .*row 0: no 'prompt' column"),
        (["--reward_model", "x"], [{"prompt": "Q"}, {"prompt": ""}], 'row 1: "prompt" must be non-empty'),
        (["--mode", "spin", "--reference_column", "gold"], [{"prompt": "Q"}], "row 0: no 'gold' column"),
        (["--mode", "spin"], [{"prompt": "Q"}], "mode spin needs --reference_column"),
        (
            ["--mode", "spin", "--reference_column", "a", "--reward_model", "x"],
            [{"prompt": "Q"}],
            "drop --reward_model",
        ),
        (["--num_generations", "1", "--reward_model", "x"], [{"prompt": "Q"}], "num_generations must be >= 2"),
        (["--reward_model", "x", "--judge_model", "y"], [{"prompt": "Q"}], "give one reward source"),
        ([], [{"prompt": "Q"}], "needs a reward: --reward_model"),
        (["--judge_endpoint", "http://h/v1"], [{"prompt": "Q"}], "--judge_endpoint needs --judge_model"),
    ],
)
def test_bad_inputs_fail_before_any_model_loads(tmp_path, extra, rows, message):
    data = _write(tmp_path / "p.jsonl", rows)
    argv = ["make-pairs", "--model_name_or_path", "does-not-exist", "--dataset_name", data, "--output",
            str(tmp_path / "o.jsonl"), *extra]  # fmt: skip
    with pytest.raises(ValueError, match=message):
        main(argv)

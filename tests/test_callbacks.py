"""WinRateCallback inside a real GRPOTrainer on tiny models: it logs win rate and win probability, they move when
the policy moves, the reference is scored once, and the best checkpoint is the policy that scored best."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from trl_rewards.callbacks import WinRateCallback
from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer

PROMPTS = [f"Question {i}: say something." for i in range(4)]
REFERENCES = ["hello", "Hi!", "ok", "sure"]


def mean_code_point(prompts, completions, **kwargs):
    """A TRL reward function with spread on random text: the mean code point of the completion, in [0, 1]."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [sum(map(ord, t)) / (127 * len(t)) if t else 0.0 for t in texts]


class CountingScorer:
    def __init__(self):
        self.calls = []

    def score(self, prompts, completions):
        self.calls.append(list(completions))
        return mean_code_point(prompts, completions)


def _trainer(tmp_path, prompts, max_steps, learning_rate=5e-2):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        max_steps=max_steps,
        max_completion_length=6,
        num_generations=2,
        per_device_train_batch_size=2,
        learning_rate=learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    dataset = Dataset.from_dict({"prompt": prompts * 2})
    return GRPOTrainer(
        model=policy, reward_funcs=mean_code_point, args=args, train_dataset=dataset, processing_class=tokenizer
    )


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("winrate")
    trainer = _trainer(tmp_path, PROMPTS, max_steps=8)
    scorer = CountingScorer()
    callback = WinRateCallback(
        trainer, scorer, PROMPTS, REFERENCES, eval_steps=4, max_new_tokens=6, keep_best="win_probability"
    )
    trainer.add_callback(callback)
    trainer.train()
    return trainer, callback, scorer


def test_logs_win_rate_that_moves_with_the_policy(grpo_run):
    trainer, callback, _ = grpo_run
    logged = [log for log in trainer.state.log_history if "eval_win_rate" in log]
    assert [log["step"] for log in logged] == [0, 4, 8]  # the start, every 4 steps, the last step
    for log, record in zip(logged, callback.history, strict=True):
        assert log["eval_win_rate"] == record["win_rate"] and log["eval_win_probability"] == record["win_probability"]
        assert 0 <= log["eval_win_rate"] <= 1 and 0 < log["eval_win_probability"] < 1
    # GRPO with a high learning rate changes the greedy completions, and the logged values follow them
    completions = [tuple(r["completions"]) for r in callback.history]
    assert len(set(completions)) == 3
    assert len({log["eval_win_probability"] for log in logged}) == 3
    assert len({log["eval_win_rate"] for log in logged}) >= 2
    # GRPO maximizes the scorer's own reward here, so the policy ends up preferred more often than at the start
    assert logged[-1]["eval_win_probability"] > logged[0]["eval_win_probability"]


def test_win_rate_plot_from_log_history(grpo_run, tmp_path):
    from trl_rewards.evaluation import plots

    trainer, _, _ = grpo_run
    path = plots.plot_win_rate(
        trainer.state.log_history,
        tmp_path / "win_rate.png",
        win_rate_key="eval_win_rate",
        win_probability_key="eval_win_probability",
    )
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8_000
    # the evaluations did not swallow GRPO's own training metrics: every training step logged its reward
    assert [log["step"] for log in trainer.state.log_history if "reward" in log and "loss" in log] == list(range(1, 9))


def test_reference_scored_once_and_policy_scored_per_evaluation(grpo_run):
    _, callback, scorer = grpo_run
    assert scorer.calls[0] == REFERENCES
    assert len(scorer.calls) == 1 + len(callback.history)
    expected = [mean_code_point(PROMPTS, r["completions"]) for r in callback.history]
    assert [r["policy_score"] for r in callback.history] == pytest.approx([sum(s) / 4 for s in expected])


def test_best_checkpoint_is_the_best_policy(grpo_run, tmp_path):
    """The saved folder holds the policy of the step with the highest win probability: it regenerates the same
    greedy completions."""
    trainer, callback, _ = grpo_run
    best = max(callback.history, key=lambda r: r["win_probability"])
    saved = json.loads(open(f"{callback.best_dir}/best.json").read())
    assert callback.best_dir.endswith("best-win-probability")
    assert (saved["step"], saved["win_probability"]) == (best["step"], best["win_probability"])
    reloaded = AutoModelForCausalLM.from_pretrained(callback.best_dir)
    tokenizer = tiny_llama_tokenizer()
    regenerated = []
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        out = reloaded.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        regenerated.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert regenerated == best["completions"]


def test_conversational_prompts(tmp_path):
    """Chat prompts go through the chat template; completions are scored as assistant messages."""
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS[:2]]
    trainer = _trainer(tmp_path, prompts, max_steps=1)
    scorer = CountingScorer()
    callback = WinRateCallback(trainer, scorer, prompts, REFERENCES[:2], eval_steps=1, evaluate_on_start=False)
    trainer.add_callback(callback)
    trainer.train()
    assert [r["step"] for r in callback.history] == [1]
    assert scorer.calls[0] == [[{"role": "assistant", "content": "hello"}], [{"role": "assistant", "content": "Hi!"}]]
    assert all(c[0]["role"] == "assistant" for c in callback.history[0]["completions"])
    assert trainer.model.training  # the policy is back in train mode


def test_batch_normalizing_scorer_scores_policy_and_reference_together(tmp_path):
    """A normalizing RewardEnsemble z-scores each call: policy and reference completions share one call."""
    from trl_rewards.rewards.ensemble import RewardEnsemble

    calls = []

    def recorded(prompts, completions, **kwargs):
        calls.append(list(completions))
        return mean_code_point(prompts, completions)

    trainer = _trainer(tmp_path, PROMPTS[:2], max_steps=1)
    callback = WinRateCallback(trainer, RewardEnsemble([recorded]), PROMPTS[:2], REFERENCES[:2], eval_steps=1)
    trainer.add_callback(callback)
    trainer.train()
    evaluations = [c for c in calls if c[2:] == REFERENCES[:2]]  # the trainer's own reward calls are separate
    assert [c[:2] for c in evaluations] == [r["completions"] for r in callback.history]
    assert len(evaluations) == 2  # step 0 and step 1, the reference scored with each


def test_rejects_bad_options(tmp_path):
    trainer = _trainer(tmp_path, PROMPTS, max_steps=1)
    with pytest.raises(ValueError, match="got 4 prompts but 3 reference completions"):
        WinRateCallback(trainer, CountingScorer(), PROMPTS, REFERENCES[:3])
    with pytest.raises(ValueError, match="eval_steps must be a positive integer"):
        WinRateCallback(trainer, CountingScorer(), PROMPTS, REFERENCES, eval_steps=0)
    with pytest.raises(ValueError, match="keep_best must be one of"):
        WinRateCallback(trainer, CountingScorer(), PROMPTS, REFERENCES, keep_best="loss")
    with pytest.raises(ValueError, match="ties must be one of"):
        WinRateCallback(trainer, CountingScorer(), PROMPTS, REFERENCES, ties="coin")
    with pytest.raises(ValueError, match="prompts is empty"):
        WinRateCallback(trainer, CountingScorer(), [], [])

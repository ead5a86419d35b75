"""RewardFunctionModule as PPOTrainer's `reward_model` (trl 1.12, `trl.experimental.ppo`): `get_reward` returns
exactly the reward function's rewards of the decoded (prompt, completion), and real PPO steps run with a
RewardEnsemble of two reward models with different tokenizers plus an answer check, its metrics in the logs.

Runs only in the trl 1.12 environment (`./dev test-ppo`). The main environment (trl >= 1.13, which has no
PPOTrainer) skips it, for that reason only: on trl < 1.13 the PPO imports below are plain and fail if broken."""

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest  # noqa: E402
import trl  # noqa: E402
from packaging.version import Version  # noqa: E402

if Version(trl.__version__) >= Version("1.13"):
    pytest.skip(
        f"PPOTrainer left TRL after 1.12 (this environment has trl {trl.__version__}); "
        "`./dev test-ppo` runs this file in .venv-ppo with trl 1.12",
        allow_module_level=True,
    )

import torch  # noqa: E402
import trl.experimental.ppo as ppo  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402
from trl.experimental.utils import get_reward  # noqa: E402

from trl_rewards.callbacks import attach_reward_metrics  # noqa: E402
from trl_rewards.rewards.ensemble import RewardEnsemble  # noqa: E402
from trl_rewards.rewards.model_rewards import RewardModelFunction  # noqa: E402
from trl_rewards.rewards.ppo import RewardFunctionModule  # noqa: E402
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward  # noqa: E402
from trl_rewards.testing import (  # noqa: E402
    tiny_bert_reward_model,
    tiny_llama_config,
    tiny_llama_reward_model,
    tiny_llama_tokenizer,
)

PROMPTS = ["What is 1 + 1? ", "What is 20 + 2? ", "Add 3 and 4. ", "Hi? "]
ANSWERS = [2, 22, 7, None]


class Recorder:
    """A reward function that records what it was called with and returns its wrapped function's rewards."""

    __name__ = "recorder"

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        out = self.inner(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        self.calls.append({"prompts": prompts, "completions": completions, "ids": completion_ids, "out": out})
        return out


def _tokenizer():
    tokenizer = tiny_llama_tokenizer()
    tokenizer.padding_side = "left"  # PPO generates from left-padded queries
    return tokenizer


def _ensemble():
    return RewardEnsemble(
        [
            RewardModelFunction(*tiny_llama_reward_model(seed=1), name="llama_rm", device="cpu"),
            RewardModelFunction(*tiny_bert_reward_model(seed=2), name="bert_rm", device="cpu"),
            AnswerCorrectnessReward(),
        ],
        name="ensemble",
    )


def _query_responses(tokenizer):
    """Left-padded queries (width 20) followed by right-padded responses, as PPOTrainer builds them."""
    queries = tokenizer(PROMPTS, padding="max_length", max_length=20, return_tensors="pt")["input_ids"]
    responses = ["The answer is 2.</s>", "The answer is 5.</s>", "7</s>", ""]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(len(r) for r in ids)
    padded = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in ids])
    return torch.cat([queries, padded], dim=1), responses


def test_get_reward_returns_the_reward_functions_rewards():
    tokenizer = _tokenizer()
    recorder = Recorder(_ensemble())
    rows = [{"input_ids": tokenizer(p)["input_ids"], "answer": a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    module = RewardFunctionModule(recorder, tokenizer, query_columns=rows, none_reward=0.0)
    query_responses, responses = _query_responses(tokenizer)
    logits, rewards, lengths = get_reward(module, query_responses, tokenizer.pad_token_id, 20)
    (call,) = recorder.calls
    assert call["prompts"] == PROMPTS  # BOS and padding dropped
    assert call["completions"] == [r.replace("</s>", "") for r in responses]
    assert call["ids"][2] == tokenizer("7</s>", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(rewards, torch.tensor(call["out"], dtype=torch.float32))
    assert logits.shape == (*query_responses.shape, 1)
    assert lengths[3].item() == 19  # an empty response: get_reward reads the last query token, which holds it too
    expected = recorder.inner(prompts=PROMPTS, completions=call["completions"], answer=ANSWERS)
    torch.testing.assert_close(rewards, torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(module.rewards(query_responses, tokenizer.pad_token_id, 20), rewards)
    assert "ensemble/llama_rm/raw_mean" in module.pop_metrics() and module.pop_metrics() == {}


def test_adapter_errors():
    tokenizer = _tokenizer()
    query_responses, _ = _query_responses(tokenizer)
    mask = query_responses != tokenizer.pad_token_id
    module = RewardFunctionModule(AnswerCorrectnessReward(), tokenizer)
    with pytest.raises(RuntimeError, match="needs context_length"):
        module.backbone(input_ids=query_responses, attention_mask=mask)
    with pytest.raises(KeyError, match="no 'answer' column"):  # no query_columns registered
        module.rewards(query_responses, tokenizer.pad_token_id, 20)
    rows = [{"input_ids": tokenizer(p)["input_ids"], "answer": a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    strict = RewardFunctionModule(AnswerCorrectnessReward(), tokenizer, query_columns=rows)
    with pytest.raises(ValueError, match=r"no reward for rows \[3\].*none_reward="):
        strict.rewards(query_responses, tokenizer.pad_token_id, 20)
    partial = RewardFunctionModule(AnswerCorrectnessReward(), tokenizer, query_columns=rows[:2], none_reward=-1.0)
    with pytest.raises(KeyError, match="query of row 2 .* is not among the registered query_columns"):
        partial.rewards(query_responses, tokenizer.pad_token_id, 20)
    with pytest.raises(ValueError, match="registered with different values"):
        partial.add_query_columns([{"input_ids": rows[0]["input_ids"], "answer": 99}])
    with pytest.raises(TypeError, match="not a module"):
        RewardFunctionModule(torch.nn.Linear(1, 1), tokenizer)


def test_ppo_trainer_steps_with_reward_ensemble(tmp_path):
    tokenizer = _tokenizer()
    config = tiny_llama_config(tokenizer)
    torch.manual_seed(0)
    policy, ref_policy = AutoModelForCausalLM.from_config(config), AutoModelForCausalLM.from_config(config)
    value_config = tiny_llama_config(tokenizer)
    value_config.num_labels = 1
    value_model = AutoModelForSequenceClassification.from_config(value_config)
    prompts = [f"What is {i} + {i}? " for i in range(8)]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts], "answer": list(range(8))})
    recorder = Recorder(_ensemble())
    reward_model = RewardFunctionModule(recorder, tokenizer, query_columns=dataset)
    args = ppo.PPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        local_rollout_forward_batch_size=4,
        total_episodes=8,
        num_ppo_epochs=1,
        response_length=6,
        num_sample_generations=0,
        stop_token="eos",
        missing_eos_penalty=None,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        seed=0,
    )
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = ppo.PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset.select_columns(["input_ids"]),
    )
    attach_reward_metrics(trainer, reward_model)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    assert len(logs) == 2 and len(recorder.calls) == 2  # one rollout batch of 4 per update, one reward call each
    for entry, call in zip(logs, recorder.calls, strict=True):
        # PPO's score of each sample is the ensemble's reward (no missing-EOS penalty here)
        assert entry["objective/scores"] == pytest.approx(sum(call["out"]) / len(call["out"]), abs=1e-5)
        for member in ("llama_rm", "bert_rm", "answer_correctness"):
            assert f"ensemble/{member}/raw_mean" in entry and f"ensemble/{member}/normalized_mean" in entry
        assert "ensemble/disagreement" in entry
        assert all(prompt in prompts for prompt in call["prompts"])
    assert any(not torch.equal(p.detach(), before[n]) for n, p in policy.named_parameters())


def test_ppo_example_runs(tmp_path, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "ppo_with_reward_ensemble.py"
    spec = importlib.util.spec_from_file_location("ppo_with_reward_ensemble", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    argv = ["--output_dir", str(tmp_path), "--total_episodes", "4", "--response_length", "4", "--num_problems", "8"]
    trainer = module.main(argv + ["--aggregation", "min"])
    (entry,) = [e for e in trainer.state.log_history if "objective/scores" in e]
    assert "reward_ensemble/tiny_bert_rm/raw_mean" in entry and "reward_ensemble/disagreement" in entry

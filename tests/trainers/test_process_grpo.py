"""ProcessGRPOTrainer: real steps on a tiny Llama policy (CPU), with LoRA, gradient accumulation and num_iterations=2;
the reduction to GRPO's own advantages; a loss whose gradient follows the per-token advantages; clear errors."""

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer
from trl_rewards.trainers.process_grpo_config import ProcessGRPOConfig
from trl_rewards.trainers.process_grpo_trainer import ProcessGRPOTrainer

COMMON = dict(
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=8,
    max_steps=2,
    learning_rate=1e-2,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
    save_strategy="no",
    seed=0,
    dataloader_pin_memory=False,
    disable_tqdm=True,
    beta=0.0,
)
VOWELS = set("aeiouAEIOU")


def vowel_count(prompts, completions, **kwargs):
    """Outcome reward: the number of vowels (varies within a group of random completions)."""
    return [float(sum(c in VOWELS for c in text)) for text in completions]


class TripleSteps:
    """Step rewards: a step every 3 characters (the last one cut by the completion's end), rewarded 1 when it holds a
    vowel or a digit."""

    __name__ = "triples"
    returns_step_rewards = True

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        out = []
        for text in completions:
            ends = [*range(3, len(text), 3), len(text)] if text else []
            out.append([(e, float(any(c in VOWELS or c.isdigit() for c in text[e - 3 : e]))) for e in ends] or None)
        return out


class WholeCompletion:
    """One step per completion, ending with its text, rewarded like `vowel_count`."""

    __name__ = "whole"

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return [
            [(len(t), v)] if t else None for t, v in zip(completions, vowel_count(prompts, completions), strict=True)
        ]


@pytest.fixture
def setup():
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    dataset = Dataset.from_dict({"prompt": [f"Say {i} vowels: " for i in range(8)]})
    return policy, tokenizer, dataset


def _record_batches(trainer):
    """Keeps every output of `_generate_and_score_completions`."""
    recorded, original = [], trainer._generate_and_score_completions

    def wrapper(inputs):
        output = original(inputs)
        recorded.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in output.items()})
        return output

    trainer._generate_and_score_completions = wrapper
    return recorded


def test_process_only_with_one_step_per_completion_is_grpo(setup, tmp_path):
    """Each completion is one step whose reward is GRPO's reward: with the process weight only, every token of a
    completion (its eos included) gets exactly GRPOTrainer's own advantage for it, with the group's std and the
    batch's (`scale_rewards`)."""
    policy, tokenizer, dataset = setup
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    for scale in ("group", "batch"):
        policy.load_state_dict(state)
        common = dict(COMMON, max_steps=1, scale_rewards=scale)
        plain = GRPOTrainer(
            policy, vowel_count, GRPOConfig(str(tmp_path / "plain"), **common), dataset, processing_class=tokenizer
        )
        plain_batches = _record_batches(plain)
        plain.train()
        policy.load_state_dict(state)
        args = ProcessGRPOConfig(str(tmp_path / "dense"), outcome_advantage_weight=0.0, **common)
        dense = ProcessGRPOTrainer(
            policy, vowel_count, args, dataset, processing_class=tokenizer, step_reward_funcs=WholeCompletion()
        )
        dense_batches = _record_batches(dense)
        dense.train()
        (theirs,), (ours,) = plain_batches, dense_batches
        assert torch.equal(theirs["completion_ids"], ours["completion_ids"])  # same completions
        mask = ours["completion_mask"].bool()
        assert ours["advantages"].shape == ours["completion_ids"].shape
        assert theirs["advantages"].abs().max() > 0.1, "the check needs groups with different rewards"
        expected = theirs["advantages"].unsqueeze(1).expand_as(ours["advantages"])
        torch.testing.assert_close(ours["advantages"][mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_real_steps_with_lora_accumulation_and_iterations(setup, tmp_path):
    policy, tokenizer, dataset = setup
    steps = TripleSteps()
    args = ProcessGRPOConfig(
        str(tmp_path / "lora"),
        gradient_accumulation_steps=2,
        num_iterations=2,
        step_reward_weights=[2.0],
        **dict(COMMON, max_steps=3),
    )
    trainer = ProcessGRPOTrainer(
        policy,
        vowel_count,
        args,
        dataset,
        processing_class=tokenizer,
        step_reward_funcs=[steps],
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    batches = _record_batches(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    # one generation per steps_per_generation (= 2 accumulation steps) * num_iterations (2) optimizer steps
    assert steps.calls == len(batches) == 2
    for batch in batches:
        assert batch["advantages"].shape == batch["completion_ids"].shape
        per_row = batch["advantages"][:, :1].expand_as(batch["advantages"])
        assert not torch.allclose(batch["advantages"] * batch["completion_mask"], per_row * batch["completion_mask"])
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all(math.isfinite(entry["loss"]) for entry in logs)
    for key in ("mean_step_reward", "steps_per_completion", "first_bad_found", "no_steps_frac"):
        assert f"steps/triples/{key}" in logs[0], key
    assert logs[0]["steps/triples/steps_per_completion"] == pytest.approx(8 / 3, abs=1.0)
    assert logs[0]["steps/process_advantage_abs_mean"] > 0
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and all("lora" in n for n in changed)


def test_loss_gradient_follows_the_per_token_advantages(setup, tmp_path):
    """TRL's loss on the (B, T) advantages: its gradient equals that of -Σ A_t · log π(token_t) · mask / Σ mask
    (`loss_type="bnpo"`, ratio 1 at the first iteration), and differs from the one of the same advantages averaged
    per sequence, so a trainer that broadcast one number per completion would fail here."""
    policy, tokenizer, dataset = setup
    args = ProcessGRPOConfig(str(tmp_path / "loss"), loss_type="bnpo", **COMMON)
    trainer = ProcessGRPOTrainer(
        policy, vowel_count, args, dataset, processing_class=tokenizer, step_reward_funcs=TripleSteps()
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train; the loss divides by it
    rows = [dataset[i // 4] for i in range(4)]  # one group of four completions
    inputs = trainer._generate_and_score_completions(rows)
    advantages, mask = inputs["advantages"], inputs["completion_mask"]
    assert advantages.dim() == 2

    def grads(loss_fn):
        trainer.model.zero_grad()
        loss_fn().backward()
        return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    def reference(a):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        attention = torch.cat([inputs["prompt_mask"], mask], 1)
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, mask.size(1))
        return -(a * logps * mask).sum() / mask.sum()

    trl_grads = grads(lambda: trainer.compute_loss(trainer.model, inputs))
    torch.testing.assert_close(trl_grads, grads(lambda: reference(advantages)), atol=1e-6, rtol=1e-4)
    per_sequence = ((advantages * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)).expand_as(advantages)
    assert not torch.allclose(trl_grads, grads(lambda: reference(per_sequence)), atol=1e-6, rtol=1e-3)


def test_clear_errors(setup, tmp_path):
    policy, tokenizer, dataset = setup
    args = ProcessGRPOConfig(str(tmp_path / "err"), **COMMON)
    build = dict(train_dataset=dataset, processing_class=tokenizer)
    with pytest.raises(ValueError, match="pass it as step_reward_funcs"):
        ProcessGRPOTrainer(policy, [vowel_count, TripleSteps()], args, step_reward_funcs=TripleSteps(), **build)
    with pytest.raises(ValueError, match="at least one outcome reward function"):
        ProcessGRPOTrainer(policy, None, args, step_reward_funcs=TripleSteps(), **build)
    with pytest.raises(ValueError, match="step_reward_funcs is empty"):
        ProcessGRPOTrainer(policy, vowel_count, args, **build)
    with pytest.raises(ValueError, match="does not support tools"):
        ProcessGRPOTrainer(policy, vowel_count, args, step_reward_funcs=TripleSteps(), tools=[len], **build)
    with pytest.raises(ValueError, match="distinct names"):
        ProcessGRPOTrainer(policy, vowel_count, args, step_reward_funcs=[TripleSteps(), TripleSteps()], **build)
    two = ProcessGRPOConfig(str(tmp_path / "err"), step_reward_weights=[1.0, 1.0], **COMMON)
    with pytest.raises(ValueError, match="2 weights for 1 step reward functions"):
        ProcessGRPOTrainer(policy, vowel_count, two, step_reward_funcs=TripleSteps(), **build)
    for bad, message in (
        (dict(outcome_advantage_weight=-1.0), "outcome_advantage_weight must be >= 0"),
        (dict(outcome_advantage_weight=0.0, process_advantage_weight=0.0), "both 0"),
        (dict(process_advantage_weight=float("nan")), "finite"),
        (dict(step_reward_weights=[]), "non-empty list"),
    ):
        with pytest.raises(ValueError, match=message):
            ProcessGRPOConfig(str(tmp_path / "err"), **bad, **COMMON)

    def past_the_end(prompts, completions, **kwargs):
        return [[(len(t) + 1, 1.0)] for t in completions]

    trainer = ProcessGRPOTrainer(policy, vowel_count, args, step_reward_funcs=past_the_end, **build)
    with pytest.raises(ValueError, match="'past_the_end', completion 0, step 0: char_end"):
        trainer.train()


class FirstCharSteps:
    """Two one-character steps: the first is rewarded when it is a lowercase letter, the second by the parity of its
    code point (noise for the first token's question)."""

    __name__ = "first_char"

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        out = []
        for text in completions:
            if len(text) < 2:
                out.append([(len(text), 0.0)] if text else None)
            else:
                out.append([(1, float(text[0].islower())), (2, float(ord(text[1]) % 2))])
        return out


def _zero(prompts, completions, **kwargs):
    return [0.0] * len(completions)


@pytest.mark.parametrize("variant", ["exact", "one_token_off"])
def test_learnability_step_credit_reaches_its_token(tmp_path, monkeypatch, variant):
    """Process-only learning (the outcome reward is constant): only the first step's reward says what the first token
    should be, so the policy learns P(first character lowercase) >= 0.95 from a start near 26/107. When the process
    advantages are read one token off (shifted left: each token gets its successor's), the first token only sees the
    second step's noise, and the policy does not learn it (< 0.5)."""
    import trl_rewards.trainers.process_grpo_trainer as module

    if variant == "one_token_off":
        exact = module.token_advantages

        def shifted(step_tokens, normalized, length):
            advantages = exact(step_tokens, normalized, length)
            return torch.cat([advantages[:, 1:], torch.zeros_like(advantages[:, :1])], dim=1)

        monkeypatch.setattr(module, "token_advantages", shifted)
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    common = dict(COMMON, per_device_train_batch_size=16, num_generations=8, max_completion_length=2, max_steps=30)
    args = ProcessGRPOConfig(
        str(tmp_path / variant), outcome_advantage_weight=0.0, **dict(common, learning_rate=3e-2, logging_steps=10)
    )
    dataset = Dataset.from_dict({"prompt": ["Go: "] * 64})
    trainer = ProcessGRPOTrainer(
        policy, _zero, args, dataset, processing_class=tokenizer, step_reward_funcs=FirstCharSteps()
    )
    trainer.train()
    inputs = tokenizer(["Go: "] * 200, return_tensors="pt")
    torch.manual_seed(1)
    with torch.no_grad():
        generated = trainer.model.generate(**inputs, max_new_tokens=1, do_sample=True, pad_token_id=0)
    first = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    share = sum(text[:1].islower() for text in first) / len(first)
    if variant == "exact":
        assert share >= 0.95, share
    else:
        assert share < 0.5, share


class AsyncTripleSteps(TripleSteps):
    """`TripleSteps` as an async function (e.g. a served PRM: `RemoteRewardFunction(url, step_rewards=True)`)."""

    __name__ = "triples"

    async def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return TripleSteps.__call__(self, prompts, completions, completion_ids, **kwargs)


def test_an_async_step_reward_function_is_awaited_like_a_sync_one(setup, tmp_path):
    policy, tokenizer, dataset = setup
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    batches = []
    for steps in (TripleSteps(), AsyncTripleSteps()):
        policy.load_state_dict(state)
        args = ProcessGRPOConfig(str(tmp_path / type(steps).__name__), **dict(COMMON, max_steps=1))
        trainer = ProcessGRPOTrainer(
            policy, vowel_count, args, dataset, processing_class=tokenizer, step_reward_funcs=steps
        )
        batches.append(_record_batches(trainer))
        trainer.train()
        assert steps.calls == 1
    (sync,), (awaited,) = batches
    assert torch.equal(sync["completion_ids"], awaited["completion_ids"])
    torch.testing.assert_close(awaited["advantages"], sync["advantages"], atol=0, rtol=0)

"""Implicit (DPO) rewards and LLM-as-a-judge, checked by hand on tiny causal LMs."""

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

from trl_rewards.inference.implicit_scoring import ImplicitRewardScorer, encode_prompt_and_completion
from trl_rewards.inference.judge_scoring import JudgeScorer, parse_score
from trl_rewards.rewards.implicit_rewards import ImplicitRewardFunction, JudgeRewardFunction
from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer


def _lm(seed):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer)).eval(), tokenizer


def _literal_logp(model, ids, prompt_length):
    """log π(y|x) = Σ_{t ≥ prompt_length} log softmax(logits[t - 1])[ids[t]], one token at a time."""
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(prompt_length, len(ids)))


def test_implicit_reward_equals_literal_log_probabilities():
    policy, tokenizer = _lm(0)
    reference, _ = _lm(1)
    prompts, completions = ["Q: 1+1? ", "Hello "], ["A: 2", "there, friend"]
    scorer = ImplicitRewardScorer(policy, tokenizer, reference, beta=0.5, batch_size=1)
    rewards = scorer.score(prompts, completions)
    normalized = ImplicitRewardScorer(policy, tokenizer, reference, beta=0.5, length_normalize=True).score(
        prompts, completions
    )
    for prompt, completion, reward, per_token in zip(prompts, completions, rewards, normalized, strict=True):
        ids, start = encode_prompt_and_completion(tokenizer, prompt, completion)
        assert tokenizer.convert_ids_to_tokens(ids[start:]) == [*completion, "</s>"]
        ratio = _literal_logp(policy, ids, start) - _literal_logp(reference, ids, start)
        assert reward == pytest.approx(0.5 * ratio, abs=1e-6)
        assert per_token == pytest.approx(0.5 * ratio / (len(ids) - start), abs=1e-6)
    # batched like one at a time (padding never moves a real token)
    assert ImplicitRewardScorer(policy, tokenizer, reference, beta=0.5, batch_size=8).score(
        prompts, completions
    ) == pytest.approx(rewards, abs=1e-6)


def test_lora_toggled_reference_equals_a_separate_reference_model():
    base, tokenizer = _lm(0)
    reference = copy.deepcopy(base)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts, completions = ["Q: 2+2? ", "Hi "], ["A: 4", "you"]
    toggled = ImplicitRewardScorer(policy, tokenizer, beta=0.1).score(prompts, completions)
    separate = ImplicitRewardScorer(policy, tokenizer, reference, beta=0.1).score(prompts, completions)
    assert toggled == pytest.approx(separate, abs=1e-5) and any(abs(r) > 1e-4 for r in toggled)
    with pytest.raises(ValueError, match="ref_model is required"):
        ImplicitRewardScorer(reference, tokenizer)


def test_judge_expected_score_is_the_hand_computed_expectation():
    """E[s] = Σ_s s · p(s) / Σ_s p(s) over the next-token probabilities of "0".."5" after "Score: "."""
    judge, tokenizer = _lm(3)
    scorer = JudgeScorer(judge, tokenizer)
    text = scorer.judge_prompt("What is 2+2?", "4") + "Score: "
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    logits = judge(input_ids=ids).logits[0, -1].double()
    p = [math.exp(logits[tokenizer.convert_tokens_to_ids(str(s))].item()) for s in range(6)]
    expected = sum(s * ps for s, ps in enumerate(p)) / sum(p)
    assert scorer.score(["What is 2+2?"], ["4"])[0] == pytest.approx(expected, abs=1e-9)
    reward = JudgeRewardFunction(judge, tokenizer)
    assert reward(prompts=["What is 2+2?"], completions=["4"]) == pytest.approx([expected], abs=1e-9)


def test_parse_score_reads_the_rubric_line_and_refuses_the_rest():
    assert parse_score("Relevant and complete.\nScore: 4") == 4
    assert parse_score("Score: 2 ... on reflection, Score: **5**/5") == 5
    assert parse_score("I would give it four points.") is None
    assert parse_score("Score: 9") is None


def test_parse_mode_counts_unparsable_judgements():
    """A random tiny judge writes no "Score: N": every reward is None (never a made-up number), counted."""
    judge, tokenizer = _lm(4)
    logged = {}
    reward = JudgeRewardFunction(judge, tokenizer, mode="parse", max_new_tokens=4, name="judge")
    assert reward(prompts=["Q", "R"], completions=["a", "b"], log_metric=logged.__setitem__) == [None, None]
    assert logged == {"judge/num_unparsable": 2.0}


def test_implicit_reward_function_follows_the_contract():
    policy, tokenizer = _lm(0)
    reference, _ = _lm(1)
    reward = ImplicitRewardFunction(policy, reference, tokenizer=tokenizer, beta=0.1)
    assert reward.__name__ == "implicit_reward"
    out = reward(prompts=["Q "], completions=["a"])
    assert len(out) == 1 and math.isfinite(out[0])


@pytest.mark.slow
def test_tiny_dpo_run_gives_an_implicit_reward_that_prefers_chosen(tmp_path):
    """A few steps of TRL's DPOTrainer on 8 pairs; the implicit reward against the initial model then ranks chosen
    above rejected on (almost) every training pair, as DPO's loss asks."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy, tokenizer = _lm(0)
    reference = copy.deepcopy(policy)
    pairs = [{"prompt": f"Q{i}: ", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(8)]
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=12, learning_rate=5e-3, beta=0.1,
        report_to=[], save_strategy="no", use_cpu=True, bf16=False, logging_steps=1, dataloader_pin_memory=False,
        activation_checkpointing=False,
    )  # fmt: skip
    DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(pairs),
               processing_class=tokenizer).train()  # fmt: skip
    scorer = ImplicitRewardScorer(policy, tokenizer, reference, beta=0.1)
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"] for p in pairs])
    rejected = scorer.score(prompts, [p["rejected"] for p in pairs])
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 7

"""Weight averaging of reward models (WARM): the averaged weights are the weighted mean of the members', parameter by
parameter (LoRA adapters: the base plus the mean of their merged deltas); members that cannot be averaged are refused
with a reason; distant members get a warning; the interpolation check scores the path between two members."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from trl_rewards.evaluation.interpolation import interpolation_check
from trl_rewards.evaluation.runner import evaluate_preferences
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.losses import bradley_terry_loss
from trl_rewards.merge import average_reward_models
from trl_rewards.modeling import load_reward_model
from trl_rewards.scripts.cli import main
from trl_rewards.scripts.inputs import InputError
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model


def _member(tmp_path, name, shift, **config):
    """Seed-0 tiny Llama RM moved by `shift` on every parameter: members of "one initialization"."""
    model, tokenizer = tiny_llama_reward_model(seed=0, **config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(shift)
    model.config.reward_mean, model.config.reward_std = 1.0, 2.0
    return save_tiny(model, tokenizer, tmp_path / name), model.state_dict()


def test_averaged_weights_are_the_weighted_mean_parameter_by_parameter(tmp_path):
    """Weights (1, 3): θ = (1 * θ_a + 3 * θ_b) / 4 for every parameter; with θ_b = θ_a + 0.004 that is θ_a + 0.003."""
    a, state_a = _member(tmp_path, "a", 0.0)
    b, state_b = _member(tmp_path, "b", 0.004)
    out = tmp_path / "avg"
    distances = average_reward_models([a, b], str(out), weights=[1, 3])
    averaged = load_file(out / "model.safetensors")
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, (state_a[name] + 3 * state_b[name]) / 4, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(tensor, state_a[name] + 0.003, rtol=0, atol=1e-6, msg=name)
    assert distances[a] > distances[b] > 0  # the heavier member is closer to the average
    model, _ = load_reward_model(str(out), require_trained_head=True)
    assert getattr(model.config, "reward_mean", None) is None  # a member's statistics do not describe the average
    assert model.config.averaged_from["weights"] == [1.0, 3.0]


def test_cli_average_with_equal_weights(tmp_path):
    a, state_a = _member(tmp_path, "a", 0.0)
    b, state_b = _member(tmp_path, "b", 0.002)
    assert main(["average", str(tmp_path / "avg"), a, b]) == 0
    averaged = load_file(tmp_path / "avg" / "model.safetensors")
    name = next(iter(averaged))
    torch.testing.assert_close(averaged[name], (state_a[name] + state_b[name]) / 2, rtol=0, atol=1e-6)


def test_refuses_members_that_cannot_be_averaged(tmp_path):
    a, _ = _member(tmp_path, "a", 0.0)
    wide, _ = _member(tmp_path, "wide", 0.0, intermediate_size=48)
    bert = save_tiny(*tiny_bert_reward_model(), tmp_path / "bert")
    with pytest.raises(ValueError, match="has shape"):
        average_reward_models([a, wide], str(tmp_path / "x"))
    with pytest.raises(ValueError, match="is a BertForSequenceClassification"):
        average_reward_models([a, bert], str(tmp_path / "y"))
    with pytest.raises(ValueError, match="at least two"):
        average_reward_models([a], str(tmp_path / "z"))
    with pytest.raises(ValueError, match="weights must be 2 finite numbers"):
        average_reward_models([a, a], str(tmp_path / "z"), weights=[1, -1])


def test_warns_when_members_are_far_apart(tmp_path, caplog):
    """Two independently initialized models (seeds 0 and 1) are far apart: averaging them is not WARM."""
    a = save_tiny(*tiny_llama_reward_model(seed=0), tmp_path / "a")
    b = save_tiny(*tiny_llama_reward_model(seed=1), tmp_path / "b")
    with caplog.at_level(logging.WARNING, logger="trl_rewards.merge"):
        average_reward_models([a, b], str(tmp_path / "avg"))
    assert "one initialization" in caplog.text


def _lora_member(tmp_path, base, name, seed, r=2, alpha=4, target_modules=("q_proj", "v_proj")):
    """A LoRA reward-model adapter on `base` like our trainers save (LoRA factors + the `score` head in
    modules_to_save, tokenizer beside), with every trainable tensor moved off its initialization (B starts at 0)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model = get_peft_model(
        model, LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=alpha, target_modules=list(target_modules))
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(tmp_path / name)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / name)
    return str(tmp_path / name)


def _factors(adapter):
    """`{module: (A, B)}` and the head weight of a saved adapter, read from its file."""
    tensors = load_file(f"{adapter}/adapter_model.safetensors")
    factors, head = {}, None
    for key, tensor in tensors.items():
        module = key.removeprefix("base_model.model.")
        if ".lora_A." in key:
            factors.setdefault(module.split(".lora_A.")[0], [None, None])[0] = tensor
        elif ".lora_B." in key:
            factors.setdefault(module.split(".lora_B.")[0], [None, None])[1] = tensor
        elif module.startswith("score."):
            head = tensor
    return factors, head


def test_lora_adapters_average_to_the_base_plus_the_weighted_mean_of_their_deltas(tmp_path):
    """
    Adapters a, b on one base W0 (r = 2, alpha = 4: scaling s = 2), weights (1, 3). Each merged member is
    W_i = W0 + s B_i A_i (and its own head), so the average must be, parameter by parameter,
        LoRA targets: W0 + s (1 B_a A_a + 3 B_b A_b) / 4;  score head: (1 h_a + 3 h_b) / 4;  everything else: W0,
    read here from the base and adapter files, not through PEFT's merge. Averaging the factors instead,
    W0 + s ((B_a + 3 B_b) / 4)((A_a + 3 A_b) / 4), is a different matrix (the product is bilinear).
    """
    base = save_tiny(*tiny_llama_reward_model(seed=0), tmp_path / "base")
    a, b = _lora_member(tmp_path, base, "a", seed=1), _lora_member(tmp_path, base, "b", seed=2)
    base_state = load_file(f"{base}/model.safetensors")
    (factors_a, head_a), (factors_b, head_b) = _factors(a), _factors(b)
    assert len(factors_a) == 4  # q_proj and v_proj of 2 layers
    average_reward_models([a, b], str(tmp_path / "avg"), weights=[1, 3])
    averaged = load_file(tmp_path / "avg" / "model.safetensors")
    assert averaged.keys() == base_state.keys()  # a plain model, no LoRA tensors
    for name, tensor in averaged.items():
        module = name.removesuffix(".weight")
        if module in factors_a:
            (a_a, b_a), (a_b, b_b) = factors_a[module], factors_b[module]
            expected = base_state[name] + 2.0 * (b_a @ a_a + 3 * b_b @ a_b) / 4
            factor_average = base_state[name] + 2.0 * ((b_a + 3 * b_b) / 4) @ ((a_a + 3 * a_b) / 4)
            assert (factor_average - expected).abs().max() > 1e-3
        elif name == "score.weight":
            expected = (head_a + 3 * head_b) / 4
        else:
            expected = base_state[name]
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6, msg=name)


def test_refuses_lora_adapters_on_another_base_or_with_another_structure(tmp_path):
    base = save_tiny(*tiny_llama_reward_model(seed=0), tmp_path / "base")
    other_base = save_tiny(*tiny_llama_reward_model(seed=0, intermediate_size=48), tmp_path / "other_base")
    a = _lora_member(tmp_path, base, "a", seed=1)
    cases = {
        "on_other_base": (_lora_member(tmp_path, other_base, "x", seed=2), "base_model_name_or_path="),
        "rank_4": (_lora_member(tmp_path, base, "y", seed=2, r=4), "has r=4, .* r=2"),
        "other_targets": (_lora_member(tmp_path, base, "z", seed=2, target_modules=("q_proj",)), "target_modules="),
        "plain": (save_tiny(*tiny_llama_reward_model(seed=0), tmp_path / "plain"), "is a plain model, .* a LoRA"),
    }
    for case, (member, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            average_reward_models([a, member], str(tmp_path / f"out_{case}"))
        assert not (tmp_path / f"out_{case}").exists()  # refused from the configs, before anything was written


DEV = [
    {"prompt": "Question: is the sky blue?", "chosen": " yes, it is blue", "rejected": " no"},
    {"prompt": "Say hello.", "chosen": " hello there", "rejected": " go away now please"},
    {"prompt": "Two plus two?", "chosen": " four", "rejected": " five, surely"},
    {"prompt": "Name a colour.", "chosen": " green", "rejected": " a table"},
]


def _own_loss(path):
    """A member's dev BT loss and accuracy scored on its own (the α = 0 or 1 point must equal these)."""
    model, tokenizer = load_reward_model(path, require_trained_head=True)
    report = evaluate_preferences(RewardScorer(model, tokenizer), DEV)
    chosen, rejected = (torch.tensor(report["scores"][k], dtype=torch.float64) for k in ("chosen", "rejected"))
    return float(bradley_terry_loss(chosen, rejected)), report["overall"]["accuracy"]


def test_interpolation_check_ends_are_the_members_and_the_midpoint_is_the_average(tmp_path):
    a = save_tiny(*tiny_llama_reward_model(seed=0), tmp_path / "a")
    b, _ = _member(tmp_path, "b", 0.02)
    rows = interpolation_check(a, b, DEV, alphas=[0, 0.5, 1])
    assert [row["alpha"] for row in rows] == [0.0, 0.5, 1.0] and all(row["count"] == 4 for row in rows)
    assert (rows[0]["loss"], rows[0]["accuracy"]) == _own_loss(a)
    assert (rows[2]["loss"], rows[2]["accuracy"]) == _own_loss(b)
    average_reward_models([a, b], str(tmp_path / "avg"))
    assert rows[1]["loss"] == _own_loss(str(tmp_path / "avg"))[0]
    assert len({row["loss"] for row in rows}) == 3
    with pytest.raises(ValueError, match=r"alphas must be numbers in \[0, 1\]"):
        interpolation_check(a, b, DEV, alphas=[0, 1.5])


def test_cli_average_prints_the_interpolation_table(tmp_path, capsys):
    a = save_tiny(*tiny_llama_reward_model(seed=0), tmp_path / "a")
    b, _ = _member(tmp_path, "b", 0.02)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(row) + "\n" for row in DEV))
    alphas = ["--interpolation_alphas", "0", "1"]
    assert main(["average", str(tmp_path / "avg"), a, b, "--interpolation_dev", str(dev), *alphas]) == 0
    table = capsys.readouterr().out
    loss_a, loss_b = _own_loss(a)[0], _own_loss(b)[0]
    assert f"| 0.00 | {loss_a:.4f} |" in table and f"| 1.00 | {loss_b:.4f} |" in table
    dev.write_text('{"chosen": "only one side"}\n')
    with pytest.raises(InputError, match=r'--interpolation_dev .*needs a "rejected" column'):
        main(["average", str(tmp_path / "avg2"), a, b, "--interpolation_dev", str(dev)])
    assert not (tmp_path / "avg2").exists()  # the bad file was refused before averaging

"""Weight averaging of reward models (WARM): the averaged weights are the weighted mean of the members', parameter by
parameter; members that cannot be averaged are refused with a reason; distant members get a warning."""

import logging

import pytest
import torch
from safetensors.torch import load_file

from trl_rewards.merge import average_reward_models
from trl_rewards.modeling import load_reward_model
from trl_rewards.scripts.cli import main
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

"""`trl-rewards demo`: every stage end to end on tiny models (seconds), a subset of stages reusing trained models,
dataset options, options rejected before any model loads, and the pieces the stages are built from (layer freezing,
the chat template that lets a text-trained reward model score chats, GRPO prompts, the reward-trajectory plot)."""

import json
import math
import shutil

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file

from trl_rewards.data.encoding import encode_chat as _chat_ids
from trl_rewards.data.encoding import encode_text as _text_ids
from trl_rewards.evaluation.plots import plot_reward_trajectory
from trl_rewards.scripts.cli import main as cli_main
from trl_rewards.scripts.demo import DemoArguments, main, selected_stages
from trl_rewards.scripts.demo_grpo import grpo_prompts
from trl_rewards.scripts.demo_stages import INSTRUCTION, PRM_AGGREGATIONS, freeze_bottom_layers, plain_chat_template
from trl_rewards.testing import tiny_bert_reward_model, tiny_bert_tokenizer, tiny_llama_tokenizer

MEMBERS = ["bt", "prm", "answer_correctness"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, main(["--tiny", "--output_dir", str(out)])


def test_tiny_demo_runs_every_stage(tiny_run):
    out, results = tiny_run
    assert results["stages"] == ["bt", "prm", "eval", "grpo"]
    assert set(results["timings"]) == {"data", "bt", "prm", "eval", "grpo", "total"}
    assert results["bt"]["train_pairs"] == 32 and results["prm"]["train_solutions"] == 64
    assert results["bt"]["frozen_parameters"] > 0  # --tiny freezes the embeddings and 1 of the 2 layers
    # BT: the evaluation layer's report and plots, on the 16 held-out pairs
    for name in ("report.md", "results.json", "reward_distributions.png", "calibration.png"):
        assert (out / "eval_bt" / name).is_file(), name
    assert results["eval_bt"]["count"] == 16 and 0.0 <= results["eval_bt"]["accuracy"] <= 1.0
    # PRM: step metrics on every held-out solution, best-of-2 per problem for each aggregation
    prm = results["eval_prm"]
    assert prm["step_metrics"]["n_solutions"] == 32
    for method in PRM_AGGREGATIONS:
        report = prm["solutions"][method]
        assert report["n_problems"] == 16 and report["random_pick"] == 0.5 and report["oracle"] == 1.0
        assert 0.0 <= report["best_of_n"] <= 1.0
    # GRPO: one record per step with every member, group z-scores centred, normalized once
    grpo = results["grpo"]
    assert grpo["members"] == MEMBERS and grpo["double_normalization_warnings"] == []
    assert [record["step"] for record in grpo["history"]] == [1, 2]
    for record in grpo["history"]:
        for member in MEMBERS:
            assert math.isfinite(record[f"{member}/raw_mean"])
            assert abs(record[f"{member}/normalized_mean"]) < 1e-6  # z-scored within each group of 4
    assert (out / "grpo" / "reward_trajectory.png").is_file()
    adapter = load_file(out / "grpo" / "policy" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b), "LoRA B starts at 0: the policy did not train"
    saved = json.loads((out / "results.json").read_text())
    assert saved["grpo"]["steps"] == 2 and saved["eval_bt"]["accuracy"] == results["eval_bt"]["accuracy"]


def test_stage_subset_reuses_trained_models(tiny_run, tmp_path):
    out, first = tiny_run
    earlier = shutil.copytree(out, tmp_path / "earlier")  # the models of an earlier run in output_dir
    again = main(["--tiny", "--output_dir", str(earlier), "--stages", "eval"])
    assert again["stages"] == ["eval"] and "bt" not in again and "grpo" not in again
    assert again["eval_bt"]["accuracy"] == first["eval_bt"]["accuracy"]
    assert again["eval_prm"]["step_metrics"] == first["eval_prm"]["step_metrics"]
    given = main(["--tiny", "--output_dir", str(tmp_path / "given"), "--bt_model", str(out / "bt")])
    assert given["stages"] == ["prm", "eval", "grpo"]  # --bt_model replaces the bt stage
    assert given["eval_bt"]["accuracy"] == first["eval_bt"]["accuracy"]


def test_dataset_option_replaces_synthetic_pairs(tmp_path):
    rows = [{"prompt": f"Q{i}? ", "chosen": "yes " * (1 + i % 3), "rejected": "no"} for i in range(12)]
    path = str(tmp_path / "pairs")
    DatasetDict({"train": Dataset.from_list(rows[:9]), "test": Dataset.from_list(rows[9:])}).save_to_disk(path)
    results = main(
        ["--tiny", "--output_dir", str(tmp_path / "out"), "--stages", "bt", "eval", "--preference_dataset", path]
        + ["--n_train", "5"]
    )
    assert results["bt"]["train_pairs"] == 5 and results["eval_bt"]["count"] == 3
    assert "eval_prm" not in results  # no PRM trained, given or saved: its evaluation is skipped


def test_default_stages_leave_out_given_models():
    assert selected_stages(DemoArguments()) == ["bt", "prm", "eval", "grpo"]
    assert selected_stages(DemoArguments(bt_model="rm", prm_model="prm")) == ["eval", "grpo"]
    assert selected_stages(DemoArguments(stages=["grpo", "bt"])) == ["bt", "grpo"]  # pipeline order


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stages", "grpo"], "stage 'grpo' needs the bt model"),
        (["--stages", "prm", "grpo"], "stage 'grpo' needs the bt model"),
        (["--stages", "eval"], "stage 'eval' needs a BT or a PRM model"),
        (["--bt_model", "rm", "--stages", "bt", "eval"], "--bt_model replaces the 'bt' stage"),
        (["--tiny", "--policy", "some/model"], "--tiny builds its own models, so --policy"),
        (["--tiny", "--reward_base", "some/model"], "--tiny builds its own models, so --reward_base"),
        (["--policy_gguf_file", "model.gguf"], "pass --policy too"),
        (["--num_generations", "1"], "--num_generations must be >= 2"),
        (["--n_train", "0"], "--n_train must be >= 1"),
        (["--freeze_layers", "-1"], "--freeze_layers must be >= 0"),
    ],
)
def test_bad_options_fail_before_any_model_loads(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        main(["--output_dir", str(tmp_path / "out"), *argv])


@pytest.mark.parametrize("argv, choice", [(["--stages", "train"], "'train'"), (["--normalization", "none"], "'none'")])
def test_choices_reach_argparse(tmp_path, capsys, argv, choice):
    with pytest.raises(SystemExit):
        cli_main(["demo", "--output_dir", str(tmp_path), *argv])
    assert f"invalid choice: {choice}" in capsys.readouterr().err


def test_yaml_values_are_validated_too(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({"normalization": "running", "output_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match=r"--normalization must be one of \['group', 'batch'\], got 'running'"):
        main(["--config", str(config)])


@pytest.mark.parametrize("tokenizer_fn", [tiny_bert_tokenizer, tiny_llama_tokenizer])
def test_plain_chat_template_tokenizes_like_text_rows(tokenizer_fn):
    """[user: Q, assistant: A] through the template == the text row Q + "\\n" + A (special tokens and eos included)."""
    tokenizer = tokenizer_fn()
    tokenizer.chat_template = plain_chat_template(tokenizer)
    messages = [
        {"role": "user", "content": "Q: 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5.\nThe answer is 5."},
    ]
    assert _chat_ids(tokenizer, messages) == _text_ids(tokenizer, "Q: 2 + 3?\n2 + 3 = 5.\nThe answer is 5.")


def test_plain_chat_template_on_minilm(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.chat_template = plain_chat_template(tokenizer)
    messages = [{"role": "user", "content": "Mia has 3 pens."}, {"role": "assistant", "content": "The answer is 3."}]
    ids = _chat_ids(tokenizer, messages)
    assert ids == _text_ids(tokenizer, "Mia has 3 pens.\nThe answer is 3.")
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_freeze_bottom_layers():
    model, _ = tiny_bert_reward_model()
    assert freeze_bottom_layers(model, 0) == 0 and all(p.requires_grad for p in model.parameters())
    frozen = freeze_bottom_layers(model, 1)
    expected = sum(p.numel() for m in (model.bert.embeddings, model.bert.encoder.layer[0]) for p in m.parameters())
    assert frozen == expected
    assert all(p.requires_grad for p in model.bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    with pytest.raises(ValueError, match="freeze_layers=3 exceeds the 2 layers"):
        freeze_bottom_layers(model, 3)


def test_grpo_prompts_follow_the_policy_tokenizer():
    rows = Dataset.from_list([{"prompt": "Mia has 3 pens. How many?\n", "answer": 3}])
    chat = grpo_prompts(rows, tiny_llama_tokenizer())[0]
    assert chat["prompt"] == [{"role": "user", "content": f"{INSTRUCTION}\n\nMia has 3 pens. How many?"}]
    assert chat["answer"] == 3
    text = grpo_prompts(rows, tiny_bert_tokenizer())[0]  # no chat template: a text prompt
    assert text["prompt"] == f"{INSTRUCTION}\n\nMia has 3 pens. How many?\n"
    messages = [{"role": "user", "content": "Hi"}]
    assert grpo_prompts(Dataset.from_list([{"prompt": messages}]), tiny_llama_tokenizer())[0]["prompt"] == messages
    with pytest.raises(ValueError, match="need a 'prompt' column"):
        grpo_prompts(Dataset.from_list([{"question": "Hi"}]), tiny_llama_tokenizer())


def test_plot_reward_trajectory(tmp_path):
    history = [{"step": s, "bt/raw_mean": 0.1 * s, "prm/raw_mean": 0.5, "other": None} for s in (1, 2, 3)]
    path = plot_reward_trajectory(history, tmp_path / "t.png", keys=["bt/raw_mean", "prm/raw_mean"])
    assert path == str(tmp_path / "t.png") and (tmp_path / "t.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"no record with 'step' and \['other'\]"):
        plot_reward_trajectory(history, tmp_path / "u.png", keys=["bt/raw_mean", "other"])
    with pytest.raises(ValueError, match="keys is empty"):
        plot_reward_trajectory(history, tmp_path / "v.png", keys=[])
    history[1]["bt/raw_mean"] = float(torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="every value must be finite"):
        plot_reward_trajectory(history, tmp_path / "w.png", keys=["bt/raw_mean"])

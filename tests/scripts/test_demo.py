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
from trl_rewards.data.synthetic import CORRUPTION_KINDS
from trl_rewards.evaluation.plots import plot_reward_trajectory
from trl_rewards.scripts.cli import main as cli_main
from trl_rewards.scripts.demo import DemoArguments, main, selected_stages
from trl_rewards.scripts.demo_grpo import grpo_prompts, reward_slope
from trl_rewards.scripts.demo_metrics import kind_figures, pair_figures, step_figures
from trl_rewards.scripts.demo_stages import (
    EXAMPLE_PROBLEM,
    EXAMPLE_SOLUTION,
    INSTRUCTION,
    PRM_AGGREGATIONS,
    freeze_bottom_layers,
    plain_chat_template,
)
from trl_rewards.scripts.demo_summary import figure_rows, print_summary
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
    assert results["prm"]["base"] == str(out / "bt")  # --prm_init bt (the default): the PRM starts from the BT model
    assert results["bt"]["frozen_parameters"] > 0  # --tiny freezes the embeddings and 1 of the 2 layers
    # BT: the evaluation layer's report and plots, on the 16 held-out pairs
    for name in ("report.md", "results.json", "reward_distributions.png", "calibration.png"):
        assert (out / "eval_bt" / name).is_file(), name
    assert results["eval_bt"]["count"] == 16 and 0.0 <= results["eval_bt"]["accuracy"] <= 1.0
    # BT: accuracy per error kind of the rejected solution
    assert sum(report["count"] for report in results["eval_bt"]["kinds"].values()) == 16
    assert set(results["eval_bt"]["kinds"]) <= set(CORRUPTION_KINDS)
    # PRM: step metrics on every held-out solution beside their baselines, best-of-2 per problem for each
    # aggregation, and per error kind
    prm = results["eval_prm"]
    steps = prm["step_metrics"]
    assert steps["n_solutions"] == 32 and steps["majority_f1"] == 0.0
    assert steps["all_bad_f1"] == pytest.approx(2 * steps["bad_step_rate"] / (1 + steps["bad_step_rate"]))
    assert 0.5 < steps["position_auroc"] <= 1.0  # later steps are more often bad: position alone beats chance
    assert prm["pairs"]["n_problems"] == 16 and prm["pairs"]["random_pick"] == 0.5
    assert sum(report["n_solutions"] for report in prm["kinds"].values()) == 16
    for method in PRM_AGGREGATIONS:
        report = prm["solutions"][method]
        assert report["n_problems"] == 16 and report["random_pick"] == 0.5 and report["oracle"] == 1.0
        assert 0.0 <= report["best_of_n"] <= 1.0
    # GRPO: one record per step with every member, group z-scores centred, normalized once
    grpo = results["grpo"]
    assert grpo["members"] == MEMBERS and grpo["double_normalization_warnings"] == []
    assert [record["step"] for record in grpo["history"]] == [1, 2, 3]
    assert 0.0 <= grpo["truncated_share"] <= 1.0 and grpo["max_completion_length"] == 8
    for member in MEMBERS:  # a least-squares trend over the 3 steps, with its interval
        slope = grpo["reward_slopes"][member]
        assert slope["n"] == 3 and slope["slope_ci"][0] <= slope["slope"] <= slope["slope_ci"][1]
    for record in grpo["history"]:
        for member in MEMBERS:
            assert math.isfinite(record[f"{member}/raw_mean"])
            assert abs(record[f"{member}/normalized_mean"]) < 1e-6  # z-scored within each group of 4
    assert (out / "grpo" / "reward_trajectory.png").is_file()
    adapter = load_file(out / "grpo" / "policy" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b), "LoRA B starts at 0: the policy did not train"
    saved = json.loads((out / "results.json").read_text())
    assert saved["grpo"]["steps"] == 3 and saved["eval_bt"]["accuracy"] == results["eval_bt"]["accuracy"]


def test_stage_subset_reuses_trained_models(tiny_run, tmp_path):
    out, first = tiny_run
    earlier = shutil.copytree(out, tmp_path / "earlier")  # the models of an earlier run in output_dir
    again = main(["--tiny", "--output_dir", str(earlier), "--stages", "eval"])
    assert again["stages"] == ["eval"] and "bt" not in again and "grpo" not in again
    assert again["eval_bt"]["accuracy"] == first["eval_bt"]["accuracy"]
    assert again["eval_prm"]["step_metrics"] == first["eval_prm"]["step_metrics"]
    given = main(["--tiny", "--output_dir", str(tmp_path / "given"), "--bt_model", str(out / "bt")])
    assert given["stages"] == ["prm", "eval", "grpo"]  # --bt_model replaces the bt stage
    assert given["prm"]["base"] == str(out / "bt")  # and is where the PRM starts
    bare = main(["--tiny", "--output_dir", str(tmp_path / "bare"), "--stages", "prm", "--prm_init", "base"])
    assert bare["prm"]["base"] == "tiny"
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
        (["--stages", "prm", "eval"], "stage 'prm' starts from the BT model (--prm_init bt)"),
        (["--prm_init", "bt", "--prm_base", "some/model"], "--prm_base is where --prm_init base starts"),
    ],
)
def test_bad_options_fail_before_any_model_loads(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        main(["--output_dir", str(tmp_path / "out"), *argv])


@pytest.mark.parametrize(
    "argv, choice",
    [(["--stages", "train"], "'train'"), (["--normalization", "none"], "'none'"), (["--prm_init", "rm"], "'rm'")],
)
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
    assert chat["prompt"] == [  # the worked example as an earlier turn, then the question
        {"role": "user", "content": f"{INSTRUCTION}\n{EXAMPLE_PROBLEM}"},
        {"role": "assistant", "content": EXAMPLE_SOLUTION},
        {"role": "user", "content": "Mia has 3 pens. How many?"},
    ]
    assert EXAMPLE_SOLUTION.endswith("The answer is 14.") and "12 + 5 = 17" in EXAMPLE_SOLUTION
    assert chat["answer"] == 3
    text = grpo_prompts(rows, tiny_bert_tokenizer())[0]  # no chat template: a text prompt
    assert text["prompt"] == f"{INSTRUCTION}\n{EXAMPLE_PROBLEM}\n{EXAMPLE_SOLUTION}\n\nMia has 3 pens. How many?\n"
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


def test_step_figures_beside_their_baselines():
    """Hand case: 2 solutions, steps (good, good, bad) and (good, good, good); bad-step rate 1/6."""
    labels = [[True, True, False], [True, True, True]]
    perfect = step_figures([[0.9, 0.8, 0.1], [0.9, 0.7, 0.6]], labels, bootstrap=0)
    assert perfect["bad_f1"] == 1.0 and perfect["step_auroc"] == 1.0 and perfect["bad_f1_ci"] is None
    assert perfect["majority_accuracy"] == pytest.approx(5 / 6) and perfect["majority_f1"] == 0.0
    assert perfect["all_bad_f1"] == pytest.approx(2 * (1 / 6) / (1 + 1 / 6))  # recall 1, precision 1/6
    # position alone: the bad step (index 2) is outranked by the 4 good steps at indices 0 and 1 and ties with the
    # good one at index 2 (counts half): AUROC = (4 + 0.5) / 5
    assert perfect["position_auroc"] == pytest.approx(4.5 / 5)
    blind = step_figures([[0.9] * 3, [0.9] * 3], labels, bootstrap=50)
    assert blind["bad_f1"] == 0.0 and blind["step_auroc"] == 0.5
    assert blind["bad_f1_ci"] == [0.0, 0.0]


def test_pair_and_kind_figures():
    pairs = pair_figures([0.9, 0.5, 0.2], [0.1, 0.5, 0.8], bootstrap=0, seed=0)
    assert pairs["best_of_2"] == pytest.approx((1 + 0.5 + 0) / 3) and pairs["random_pick"] == 0.5
    # problem 0: correct (0) vs slip (1), problem 1: correct (2) vs copied number (3)
    probabilities = [[0.9, 0.9], [0.9, 0.8], [0.8, 0.9], [0.2, 0.1]]
    labels = [[True, True], [True, False], [True, True], [False, False]]
    kinds = ["none", "arithmetic_slip", "none", "copied_number"]
    scores = [min(p) for p in probabilities]
    report = kind_figures(probabilities, labels, kinds, scores, [(0, 1), (2, 3)], bootstrap=0)
    assert report["copied_number"]["first_error_caught"] == 1.0 and report["copied_number"]["best_of_2"] == 1.0
    assert report["copied_number"]["auroc"] == 1.0
    assert report["arithmetic_slip"]["first_error_caught"] == 0.0 and report["arithmetic_slip"]["best_of_2"] == 1.0
    assert report["arithmetic_slip"]["auroc"] == 0.75  # 0.8 outscores the correct 0.8 (tie) and is below 0.9


def test_reward_slope_has_an_interval():
    history = [{"step": s, "r": 0.5 + 0.1 * s + (0.01 if s % 2 else -0.01)} for s in range(1, 11)]
    slope = reward_slope(history, "r")
    assert slope["slope"] == pytest.approx(0.1, abs=0.01) and slope["n"] == 10
    assert slope["slope_ci"][0] < slope["slope"] < slope["slope_ci"][1] and slope["slope_ci"][0] > 0.09
    flat = reward_slope([{"step": s, "r": (-1) ** s} for s in range(1, 9)], "r")
    assert flat["slope_ci"][0] < 0 < flat["slope_ci"][1]  # no trend: the interval contains 0
    assert reward_slope(history[:2], "r") is None
    constant = reward_slope([{"step": s, "r": 0.0} for s in range(1, 5)], "r")
    assert constant["slope"] == 0.0 and constant["slope_ci"] == [0.0, 0.0]


def test_summary_prints_every_figure_beside_its_baseline(tiny_run, capsys):
    _, results = tiny_run
    rows = {name.strip(): baseline for name, _, baseline in figure_rows(results)}
    assert "prefer the shorter" in rows["BT pairwise accuracy (16 pairs)"]
    assert rows["PRM step AUROC"].startswith("chance 0.500, step position alone")
    assert "all bad" in next(baseline for name, baseline in rows.items() if name.startswith("PRM bad-step F1"))
    assert "random 0.500" in next(baseline for name, baseline in rows.items() if name.startswith("PRM best-of-2"))
    assert "max_completion_length=8" in rows["GRPO truncated completions"]
    print_summary(results)
    printed = capsys.readouterr().out
    assert "value [95% CI]" in printed and "GRPO bt reward slope / step" in printed

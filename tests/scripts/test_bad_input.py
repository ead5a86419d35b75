"""Bad input through the `trl-rewards` entry point (`console`), table-driven: each case exits non-zero with one
error line that names what is at fault (file, line or row, field, option), before any model loads where it can."""

import gzip
import json

import pytest
import torch
from transformers import LlamaForCausalLM

from trl_rewards.scripts.cli import console
from trl_rewards.testing import (
    save_tiny,
    tiny_llama_config,
    tiny_llama_reward_model,
    tiny_llama_token_classifier,
    tiny_llama_tokenizer,
)

PAIR = {"prompt": "Q? ", "chosen": "yes", "rejected": "no"}
STEP = {"prompt": "Q? ", "completions": ["1+1=2", "done"], "labels": [True, False]}
OUTCOME = {"prompt": "Q? ", "completion": "A: 2", "label": True}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")

    def jsonl(name, rows):
        path = root / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    paths = {
        "rm": save_tiny(*tiny_llama_reward_model(), root / "rm"),
        "prm": save_tiny(*tiny_llama_token_classifier(), root / "prm"),
        "pairs": jsonl("pairs.jsonl", [PAIR] * 4),
        "steps": jsonl("steps.jsonl", [STEP] * 4),
        "outcomes": jsonl("outcomes.jsonl", [OUTCOME] * 4),
        "no_chosen": jsonl("no_chosen.jsonl", [{"prompt": "Q", "rejected": "no"}] * 2),
        "identical": jsonl("identical.jsonl", [PAIR, {**PAIR, "chosen": "same", "rejected": "same"}]),
        "empty_text": jsonl("empty_text.jsonl", [{**PAIR, "chosen": "  "}]),
        "bad_label": jsonl(
            "bad_label.jsonl", [{**PAIR, "label": 1.0}, {**PAIR, "label": 0.5}, {**PAIR, "label": 1.5}]
        ),
        "steps_mismatch": jsonl("steps_mismatch.jsonl", [STEP, {**STEP, "labels": [True]}]),
        "outcome_label": jsonl("outcome_label.jsonl", [OUTCOME, {**OUTCOME, "label": "yes"}]),
        "no_completion": jsonl("no_completion.jsonl", [{"prompt": "Q", "text": "a"}]),
        "none_completion": jsonl("none_completion.jsonl", [{"prompt": "Q", "completion": "a"}, {"prompt": "Q"}]),
        "a_file": jsonl("a_file.jsonl", [PAIR]),
    }
    (root / "empty.jsonl").write_text("")
    paths["empty"] = str(root / "empty.jsonl")
    (root / "bad_json.jsonl").write_text(json.dumps(PAIR) + "\n" + json.dumps(PAIR) + "\n{oops\n")
    paths["bad_json"] = str(root / "bad_json.jsonl")
    (root / "latin1.jsonl").write_bytes(json.dumps(PAIR).encode() + b'\n{"prompt": "caf\xe9", "chosen": "a"}\n')
    paths["latin1"] = str(root / "latin1.jsonl")
    data = gzip.compress((json.dumps(PAIR) + "\n").encode() * 200)
    (root / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    paths["cut_gz"] = str(root / "cut.jsonl.gz")
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    paths["lm"] = save_tiny(LlamaForCausalLM(tiny_llama_config(tokenizer)), tokenizer, root / "lm")
    paths["out"] = str(root / "out")
    return paths


def bt(f, data="pairs", *extra):
    return ["train", "bt", "--model_name_or_path", f["rm"], "--dataset_name", f[data], "--output_dir", f["out"]]


CASES = {
    # reading files
    "empty file": (lambda f: bt(f, "empty"), 1, ["train data", "empty.jsonl", "the file is empty"]),
    "invalid JSON line": (lambda f: bt(f, "bad_json"), 1, ["bad_json.jsonl", "line 3: invalid JSON"]),
    "not UTF-8": (lambda f: bt(f, "latin1"), 1, ["latin1.jsonl", "line 2: not UTF-8"]),
    "truncated gz": (lambda f: bt(f, "cut_gz"), 1, ["cut.jsonl.gz", "damaged or truncated"]),
    "missing file": (
        lambda f: bt(f)[:5] + ["nope.jsonl", "--output_dir", f["out"]],
        1,
        ["nope.jsonl", "does not exist"],
    ),
    # rows and fields (train vs eval named)
    "no chosen column": (lambda f: bt(f, "no_chosen"), 1, ["train data", 'needs a "chosen" column']),
    "identical pair": (
        lambda f: bt(f, "identical"),
        1,
        ["train data", 'row 1: "chosen" and "rejected" are identical'],
    ),
    "empty text": (lambda f: bt(f, "empty_text"), 1, ['row 0: "chosen" is empty']),
    "label out of range": (lambda f: bt(f, "bad_label"), 1, ['row 2: "label" must lie in [0.0, 1.0]']),
    "bad eval file": (
        lambda f: bt(f) + ["--eval_dataset_name", f["identical"]],
        1,
        ["eval data", "identical.jsonl", "row 1"],
    ),
    "stepwise labels": (
        lambda f: (
            ["train", "prm", "--model_name_or_path", f["prm"], "--dataset_name", f["steps_mismatch"]]
            + ["--output_dir", f["out"]]
        ),
        1,
        ["train data", "row 1", "labels"],
    ),
    "outcome label": (
        lambda f: (
            ["train", "orm", "--model_name_or_path", f["rm"], "--dataset_name", f["outcome_label"]]
            + ["--output_dir", f["out"]]
        ),
        1,
        ["train data", "row 1", "label"],
    ),
    # options
    "accumulation 0": (lambda f: bt(f) + ["--gradient_accumulation_steps", "0"], 1, ["gradient_accumulation_steps"]),
    "negative epochs": (lambda f: bt(f) + ["--num_train_epochs", "-1"], 1, ["num_train_epochs must be > 0"]),
    "batch size 0": (lambda f: bt(f) + ["--per_device_train_batch_size", "0"], 1, ["per_device_train_batch_size"]),
    "max_length 1": (lambda f: bt(f) + ["--max_length", "1"], 1, ["max_length must be >= 2"]),
    "label smoothing": (lambda f: bt(f) + ["--label_smoothing", "0.7"], 1, ["label_smoothing must lie in [0, 0.5)"]),
    "abbreviated flag": (lambda f: bt(f) + ["--learning_rat", "1e-3"], 1, ["not used", "--learning_rat"]),
    "bad choice": (lambda f: bt(f) + ["--too_long", "sideways"], 2, ["too_long", "sideways"]),
    "no model": (
        lambda f: ["train", "bt", "--dataset_name", f["pairs"], "--output_dir", f["out"]],
        1,
        ["--model_name_or_path is required"],
    ),
    "no data": (
        lambda f: ["train", "bt", "--model_name_or_path", f["rm"], "--output_dir", f["out"]],
        1,
        ["--dataset_name is required"],
    ),
    "output is a file": (lambda f: bt(f)[:-1] + [f["a_file"]], 1, ["--output_dir", "is a file, not a folder"]),
    "resume from nowhere": (
        lambda f: bt(f) + ["--resume_from_checkpoint", "/no/such/checkpoint-3"],
        1,
        ["--resume_from_checkpoint", "not a checkpoint folder"],
    ),
    "resume with no checkpoint": (
        lambda f: bt(f) + ["--resume_from_checkpoint", "true"],
        1,
        ["holds no checkpoint-* folder"],
    ),
    "prm lm-only option": (
        lambda f: (
            ["train", "prm", "--model_name_or_path", f["prm"], "--dataset_name", f["steps"]]
            + ["--output_dir", f["out"], "--step_tag", "<t>"]
        ),
        1,
        ["step_tag is used only with model_style='lm'"],
    ),
    # eval / score
    "eval without a head": (
        lambda f: [
            "eval",
            "--model",
            f["lm"],
            "--dataset",
            f["pairs"],
            "--output_dir",
            f["out"] + "_e",
            "--plots",
            "false",
        ],
        1,
        ["holds no trained reward head"],
    ),
    "eval output is a file": (
        lambda f: ["eval", "--model", f["rm"], "--dataset", f["pairs"], "--output_dir", f["a_file"]],
        1,
        ["is a file, not a folder"],
    ),
    "eval bad rows": (
        lambda f: ["eval", "--model", f["rm"], "--dataset", f["identical"], "--output_dir", f["out"] + "_e"],
        1,
        ["eval data", "row 1"],
    ),
    "eval negative bootstrap": (
        lambda f: ["eval", "--model", f["rm"], "--dataset", f["pairs"], "--output_dir", f["out"], "--bootstrap", "-1"],
        1,
        ["bootstrap must be >= 0"],
    ),
    "score no completion": (
        lambda f: ["score", "--model", f["rm"], "--input", f["no_completion"], "--output", f["out"] + "/s.jsonl"],
        1,
        ["needs a 'completion' column"],
    ),
    "score missing completion": (
        lambda f: ["score", "--model", f["rm"], "--input", f["none_completion"], "--output", f["out"] + "/s.jsonl"],
        1,
        ['row 1: "completion" is missing'],
    ),
    "score output is a folder": (
        lambda f: ["score", "--model", f["rm"], "--input", f["outcomes"], "--output", f["out"]],
        1,
        ["--output", "is a folder"],
    ),
    "score max_length 2": (
        lambda f: (
            ["score", "--model", f["rm"], "--input", f["outcomes"], "--output", f["out"] + "/s.jsonl"]
            + ["--max_length", "2"]
        ),
        1,
        ["row 0", "max_length=2 keeps only special tokens"],
    ),
    "merge a non-adapter": (lambda f: ["merge", f["rm"], f["out"] + "_m"], 1, ["is not a PEFT adapter folder"]),
    "unknown command": (lambda f: ["trian"], 2, ["unknown command 'trian'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line(case, files, capsys, monkeypatch):
    monkeypatch.delenv("TRL_REWARDS_DEBUG", raising=False)
    argv, status, expected = CASES[case]
    try:
        code = console(argv(files))
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == status, err
    lines = [line for line in err.splitlines() if "error:" in line or line.startswith("unknown command")]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_debug_variable_shows_the_traceback(files, monkeypatch):
    monkeypatch.setenv("TRL_REWARDS_DEBUG", "1")
    with pytest.raises(ValueError, match="the file is empty"):
        console(bt(files, "empty"))

"""Stepwise (PRM) data: validation messages, the PRM800K and Math-Shepherd converters on the shared sample files and
on the real PRM800K parquet. Every count the converters must reproduce is derived in the test from the files
themselves with an independent reader (json, re, pyarrow/pandas); the spot checks of texts and labels name the file
row they come from."""

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from trl_rewards.data.stepwise import (
    first_error_step,
    from_math_shepherd,
    from_prm800k_raw,
    from_prm800k_stepwise_critic,
    split_steps,
    validate_stepwise_rows,
)


def _shared_file(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    assert path.is_file(), f"{path} is missing from the shared data folder {shared_data}"
    return path


@pytest.fixture
def prm800k_samples(shared_data) -> Path:
    return _shared_file(shared_data, "math-step-formats/samples_prm800k.jsonl")


@pytest.fixture
def shepherd_samples(shared_data) -> Path:
    return _shared_file(shared_data, "math-step-formats/samples_math-shepherd.jsonl")


@pytest.fixture
def critic_parquet(shared_data) -> Path:
    return _shared_file(shared_data, "prm800k/phase1_train.stepwise-critic.parquet")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _critic_frame(path: Path, max_problems: int | None = None):
    """The parquet read with pandas, restricted to the rows of the first `max_problems` distinct problems."""
    frame = pq.read_table(path).to_pandas()
    if max_problems is not None:
        first = frame["instruction"].drop_duplicates().iloc[:max_problems]
        frame = frame[frame["instruction"].isin(set(first))]
    return frame.reset_index(drop=True)


def _critic_expected(frame) -> dict:
    """What the converter must report on `frame`, counted with pandas: unrated rows are skipped (human-written or
    not), every rated row is written."""
    unrated = frame["rating"].isna()
    return {
        "rows_read": len(frame),
        "rows_written": int((~unrated).sum()),
        "skipped": {
            key: n
            for key, n in (
                ("human-written steps", int((unrated & frame["is_human_response"]).sum())),
                ("unrated candidate steps", int((unrated & ~frame["is_human_response"]).sum())),
            )
            if n
        },
        "rated": frame[~unrated].reset_index(drop=True),
    }


def _good_row(**overrides):
    row = {"prompt": "What is 1 + 1?", "completions": ["1 + 1 = 2.", "The answer is 2."], "labels": [True, False]}
    row.update(overrides)
    return row


# --- validation -------------------------------------------------------------------------------------------------


def test_validate_accepts_lists_datasets_numpy_bools_and_extra_fields():
    assert validate_stepwise_rows([_good_row(), _good_row(labels=[np.bool_(True), np.bool_(False)])]) is None
    assert validate_stepwise_rows(Dataset.from_list([_good_row(id=1), _good_row(id=2)])) is None


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"prompt": "p", "completions": ["a"]}, r'row 2: "labels" is missing'),
        (_good_row(completions=None), r'row 2: "completions" is missing'),
        (_good_row(prompt=""), r'row 2: "prompt" must be a non-empty string'),
        (_good_row(prompt="  \n"), r'row 2: "prompt" must be a non-empty string'),
        (_good_row(prompt=7), r'row 2: "prompt" must be a non-empty string, got 7'),
        (_good_row(completions="1 + 1 = 2.\n\n2"), r'row 2: "completions" must be a list of step strings, got str'),
        (_good_row(completions=[], labels=[]), r'row 2: "completions" has no steps'),
        (_good_row(completions=["ok", " \n "]), r'row 2: "completions"\[1\] is empty or whitespace-only'),
        (_good_row(completions=["ok", 3]), r'row 2: "completions"\[1\] must be a string, got int'),
        (_good_row(labels="TF"), r'row 2: "labels" must be a list of booleans, got str'),
        (_good_row(labels=[True, False, True]), r'row 2: "labels" has 3 entries but "completions" has 2 steps'),
        (_good_row(labels=[True, 1]), r'row 2: "labels"\[1\] is 1 \(int\); labels must be Python bool or numpy.bool_'),
        (_good_row(labels=[1.0, True]), r'row 2: "labels"\[0\] is 1.0 \(float\)'),
        ("prompt,completions,labels", r"row 2: expected a dict"),
    ],
)
def test_validate_names_row_and_field(bad_row, message):
    with pytest.raises(ValueError, match=message):
        validate_stepwise_rows([_good_row(), _good_row(), bad_row, _good_row()])


def test_validate_dataset_error_names_source_and_row():
    rows = [_good_row(), _good_row(), _good_row(), _good_row(labels=[True])]
    with pytest.raises(ValueError, match=r'^train row 3: "labels" has 1 entries but "completions" has 2 steps$'):
        validate_stepwise_rows(Dataset.from_list(rows), source="train")


def test_validate_rejects_no_rows():
    with pytest.raises(ValueError, match="dataset has no rows"):
        validate_stepwise_rows([])


def test_split_steps_and_first_error_step():
    assert split_steps("  a \n\n\n\nb\n\n  \n\n c") == ["a", "b", "c"]
    assert split_steps("x; y;", separator=";") == ["x", "y"]
    assert first_error_step([True, True, False, False]) == 2
    assert first_error_step([np.bool_(False)]) == 0
    assert first_error_step([True, True]) is None


# --- raw PRM800K ------------------------------------------------------------------------------------------------


def test_prm800k_raw_samples_follow_the_labelers_path(prm800k_samples):
    dataset, stats = from_prm800k_raw(prm800k_samples, return_stats=True)
    lines = _jsonl(prm800k_samples)
    rated = [
        line
        for line in lines
        if any(c.get("rating") is not None for step in line["label"]["steps"] for c in step["completions"] or [])
    ]
    assert (stats.rows_read, stats.rows_written, stats.skipped) == (len(lines), len(rated), {})
    assert dataset.column_names == ["prompt", "completions", "labels"]
    assert dataset["prompt"] == [line["question"]["problem"] for line in rated]
    # The labels below follow each line's labeler path by hand (the comments say how).
    labels = dataset["labels"]
    # Line 0: all five candidates of step 1 rated -1 (the human wrote the fix): the first one ends the row, bad.
    assert dataset[0]["prompt"].startswith("Three pencils and a jumbo eraser cost")
    assert labels[0] == [True, False]
    assert dataset[0]["completions"][1].startswith("The first equation is 3p + e = 124, and the second")
    # Line 1 (found_error): step 1 was rated 0 (neutral, good here); step 6 has no chosen completion, its first
    # candidate is the -1.
    assert labels[1] == [True] * 6 + [False]
    assert dataset[1]["completions"][6].startswith("For the Democrats, there are 5! ways")
    # Line 2: chosen completion 1 of the last step, "# Answer" block kept.
    assert labels[2] == [True] * 5 and dataset[2]["completions"][-1] == "Exactly.\n\n# Answer\n\n468"
    # Line 3: step 5 follows the chosen candidate 3 (rated 1), not candidate 0 (rated -1).
    assert labels[3] == [True] * 7
    assert dataset[3]["completions"][5] == "Since there are more girls than boys, g is 26 and b is 9."
    assert dataset[3]["completions"][6] == "Right. So the number of boys is 9.\n\n# Answer\n\n9"
    # Line 4 (give_up): bad step 7, the empty step 8 after it never read.
    assert labels[4] == [True] * 7 + [False]
    assert dataset[4]["completions"][7].startswith("So we have to add back on half of a face")
    assert labels[5] == [True] * 12


def test_prm800k_raw_positive_binarization(prm800k_samples):
    # Line 1's step 1 is neutral (rating 0): bad under "positive", where the row stops unless told to go on.
    stopped = from_prm800k_raw(prm800k_samples, binarize="positive")
    assert stopped["labels"][1] == [True, False]
    assert stopped["completions"][1][1].startswith("I wonder how many ways I can arrange these groups")
    going_on = from_prm800k_raw(prm800k_samples, binarize="positive", stop_at_first_error=False)
    assert going_on["labels"][1] == [True, False, True, True, True, True, False]
    assert going_on["labels"][2] == stopped["labels"][2] == [True] * 5


def test_prm800k_raw_skips_and_counts_lines_without_steps(prm800k_samples):
    lines = [json.loads(line) for line in prm800k_samples.read_text().splitlines()][:2]
    lines[0]["label"]["steps"][0] = {"completions": None, "human_completion": None, "chosen_completion": None}
    dataset, stats = from_prm800k_raw(lines, return_stats=True)
    assert len(dataset) == 1 and dataset[0]["prompt"].startswith("A Senate committee")
    assert (stats.source, stats.rows_read, stats.rows_written) == ("rows", 2, 1)
    assert stats.skipped == {"without a rated step": 1}


def test_prm800k_raw_errors_name_the_row():
    step = {"completions": [{"text": "x = 1.", "rating": None}], "chosen_completion": 0}
    good = {"question": {"problem": "p"}, "label": {"steps": [{"completions": [{"text": "a", "rating": 1}]}]}}
    good["label"]["steps"][0]["chosen_completion"] = 0
    with pytest.raises(ValueError, match=r'rows row 1: "label.steps"\[0\] chose completion 0, which has no rating'):
        from_prm800k_raw([good, {"question": {"problem": "p"}, "label": {"steps": [step]}}])
    with pytest.raises(ValueError, match=r'rows row 1: not a PRM800K record \(needs "question.problem"'):
        from_prm800k_raw([good, {"label": {"steps": []}}])
    with pytest.raises(ValueError, match=r'rows row 0: "completions"\[0\] is empty or whitespace-only'):
        from_prm800k_raw(
            [{**good, "label": {"steps": [{"completions": [{"text": " ", "rating": 1}], "chosen_completion": 0}]}}]
        )
    with pytest.raises(ValueError, match=r'rows row 0: "label.steps"\[0\] chose completion 3 of 1'):
        from_prm800k_raw([{**good, "label": {"steps": [{**good["label"]["steps"][0], "chosen_completion": 3}]}}])
    with pytest.raises(ValueError, match="binarize must be one of"):
        from_prm800k_raw([good], binarize="neutral")


# --- PRM800K stepwise-critic parquet ----------------------------------------------------------------------------


@pytest.mark.slow
def test_critic_first_problems(critic_parquet):
    dataset, stats = from_prm800k_stepwise_critic(critic_parquet, max_problems=20, return_stats=True)
    expected = _critic_expected(_critic_frame(critic_parquet, max_problems=20))
    assert (stats.rows_read, stats.rows_written, stats.skipped) == (
        expected["rows_read"],
        expected["rows_written"],
        expected["skipped"],
    )
    assert expected["skipped"]  # these problems hold both kinds of unrated rows: the test covers both counters
    rated = expected["rated"]
    for k in (0, 4, 5, 38, 41):  # each written row rebuilt from its parquet row with pandas
        row = rated.iloc[k]
        last = row["next_response"] + (f"\n\n# Answer\n\n{row['answer']}" if isinstance(row["answer"], str) else "")
        assert dataset[k] == {
            "prompt": row["instruction"],
            "completions": [*row["responses"], last],
            "labels": [True] * len(row["responses"]) + [bool(row["rating"] >= 0)],
        }
    assert dataset[0] == {
        "prompt": "How many seconds are in 7.8 minutes?",
        "completions": ["7.8 minutes is the same as 7 minutes and 0.8 minutes."],
        "labels": [True],
    }
    # Parquet row 4 (rating 0) and row 5 (rating 1, a solution: its answer goes back into the step text).
    assert dataset[4]["completions"][-1].startswith("Right. Let's check our work.") and dataset[4]["labels"][-1]
    assert dataset[5]["completions"][-1] == "Exactly.\n\n# Answer\n\n468"
    # Parquet row 39 (parquet row 31, a human step, was skipped): a wrong final answer, rated -1, after 9 steps.
    assert dataset[38]["prompt"].startswith("How many positive two-digit integers leave a remainder of 2")
    assert dataset[38]["completions"][-1].endswith("divided by 8.\n\n# Answer\n\n13")
    assert dataset[38]["labels"] == [True] * 9 + [False]
    assert dataset[41]["completions"][-1].endswith("is 12.\n\n# Answer\n\n12") and dataset[41]["labels"][-1]
    positive = from_prm800k_stepwise_critic(critic_parquet, max_problems=20, binarize="positive")
    assert rated["rating"][4] == 0  # neutral: good by default, bad under "positive"
    assert positive["labels"][4] == [True] * len(rated["responses"][4]) + [False]
    assert positive["labels"][41] == dataset["labels"][41]


@pytest.mark.slow
def test_critic_matches_raw_prm800k_on_the_same_problem(critic_parquet, prm800k_samples):
    # Sample line 2 and parquet row 5 are the same labeler path on "How many seconds are in 7.8 minutes?".
    raw = from_prm800k_raw(prm800k_samples)[2]
    assert from_prm800k_stepwise_critic(critic_parquet, max_problems=1)[5] == raw


@pytest.mark.slow
def test_critic_whole_file(critic_parquet):
    dataset, stats = from_prm800k_stepwise_critic(critic_parquet, return_stats=True)
    expected = _critic_expected(_critic_frame(critic_parquet))
    assert (stats.rows_read, stats.rows_written, stats.skipped) == (
        expected["rows_read"],
        expected["rows_written"],
        expected["skipped"],
    )
    ratings = expected["rated"]["rating"]
    last = [labels[-1] for labels in dataset["labels"]]
    # ratings 1 and 0 good, -1 bad (the default "nonnegative" binarization)
    assert (sum(last), len(last) - sum(last)) == (int((ratings >= 0).sum()), int((ratings == -1).sum()))
    assert len(last) == len(ratings) == int(ratings.isin([-1, 0, 1]).sum())
    assert all(all(labels[:-1]) for labels in dataset["labels"])


def test_critic_rejects_bad_arguments(critic_parquet):
    with pytest.raises(ValueError, match="max_problems must be >= 1"):
        from_prm800k_stepwise_critic(critic_parquet, max_problems=0)
    with pytest.raises(ValueError, match="binarize must be one of"):
        from_prm800k_stepwise_critic(critic_parquet, binarize="ge0")


# --- Math-Shepherd ----------------------------------------------------------------------------------------------


def test_math_shepherd_samples(shepherd_samples):
    dataset, stats = from_math_shepherd(shepherd_samples, return_stats=True)
    lines = _jsonl(shepherd_samples)
    assert (stats.rows_read, stats.rows_written, stats.skipped) == (len(lines), len(lines), {})
    # independent reading: one "ки" tag per step in "input"; "label" has "+"/"-" where each tag was, ending a line
    assert [len(steps) for steps in dataset["completions"]] == [line["input"].count("ки") for line in lines]
    assert dataset["labels"] == [[m == "+" for m in re.findall(r" ([+-])(?=\n|$)", line["label"])] for line in lines]
    first = dataset[0]
    assert first["prompt"].startswith("Janet pays $40/hour for 3 hours per week of clarinet lessons")
    assert first["prompt"].endswith("than clarinet lessons in a year?")
    assert (
        first["completions"][0]
        == "Step 1: Janet spends 3 hours + 5 hours = <<3+5=8>>8 hours per week on music lessons."
    )
    assert first["completions"][4].endswith("in a year. The answer is: 13520")
    assert first["labels"] == [True, True, True, True, False]
    assert dataset["labels"][4] == [True, False, False, False, False]
    assert dataset["labels"][1] == [False, False, False]
    assert not any("ки" in step for steps in dataset["completions"] for step in steps)


def _shepherd(*steps_and_marks, problem="What is 2 + 2?"):
    text = " ".join(f"Step {i + 1}: {step} ки\n" for i, (step, _) in enumerate(steps_and_marks)).rstrip("\n")
    marked = text
    for _, mark in steps_and_marks:
        marked = marked.replace("ки", mark, 1)
    return {"input": f"{problem} {text}", "label": f"{problem} {marked}"}


def test_math_shepherd_errors_name_the_row():
    good = _shepherd(("2 + 2 = 4.", "+"), ("The answer is: 4", "+"))
    assert from_math_shepherd([good])["labels"] == [[True, True]]
    missing_mark = {**good, "label": good["label"].replace(" +\n", " \n", 1)}
    with pytest.raises(ValueError, match=r'rows row 1: "input" has 2 "ки" step tags but "label" has 1 "\+"/"-"'):
        from_math_shepherd([good, missing_mark])
    with pytest.raises(ValueError, match=r'rows row 1: "input" has no "Step 1:" before its first "ки" tag'):
        from_math_shepherd([good, {"input": "Solve. ки So Step 1: x ки", "label": "Solve. + So Step 1: x +"}])
    with pytest.raises(ValueError, match=r'rows row 0: "input" has no "ки" step tag'):
        from_math_shepherd([{"input": "Q? Step 1: 4", "label": "Q? Step 1: 4"}])
    with pytest.raises(ValueError, match=r'rows row 0: "input" has text after its last "ки" tag'):
        from_math_shepherd([{"input": good["input"] + " Step 3: 5", "label": good["label"] + " Step 3: 5"}])
    with pytest.raises(ValueError, match=r'rows row 1: expected a dict with "input" and "label", got str'):
        from_math_shepherd([good, good["input"]])
    with pytest.raises(ValueError, match=r'rows row 0: "label" must be a string, got NoneType'):
        from_math_shepherd([{"input": good["input"]}])


def test_math_shepherd_skip_malformed_counts_them():
    good = _shepherd(("2 + 2 = 4.", "+"))
    bad = {**good, "label": good["label"].replace("+", "?")}
    dataset, stats = from_math_shepherd([bad, good], skip_malformed=True, return_stats=True)
    assert len(dataset) == 1 and stats.skipped == {"malformed": 1}
    assert dataset[0] == {"prompt": "What is 2 + 2?", "completions": ["Step 1: 2 + 2 = 4."], "labels": [True]}


def test_math_shepherd_custom_step_tag():
    row = {"input": "Q? Step 1: a <t>\nStep 2: b <t>", "label": "Q? Step 1: a -\nStep 2: b +"}
    assert from_math_shepherd([row], step_tag="<t>")[0]["labels"] == [False, True]

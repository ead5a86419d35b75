"""Outcome (ORM) data: validation messages, final-answer extraction, the GSM8K verifier loader on the real file and
the question-disjoint split. Expected values were read off the files by eye."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from trl_rewards.data.outcome import (
    GSM8K_VERIFIER_SOURCES,
    extract_numeric_answer,
    load_gsm8k_verifier,
    split_by_question,
    validate_outcome_rows,
)


def _shared(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    assert path.exists(), f"{path} is missing from the shared data folder"
    return path


@pytest.fixture
def verifier_file(shared_data) -> Path:
    return _shared(shared_data, "gsm8k-verifier/model_solutions.train.jsonl")


def _good_row(**overrides):
    row = {"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5\nA: 5", "label": True}
    row.update(overrides)
    return row


# --- validation -------------------------------------------------------------------------------------------------


def test_validate_accepts_lists_datasets_numpy_bools_and_extra_fields():
    assert validate_outcome_rows([_good_row(), _good_row(label=np.bool_(False), question_id=3)]) is None
    assert validate_outcome_rows(Dataset.from_list([_good_row(), _good_row(label=False)])) is None


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"prompt": "p", "completion": "c"}, r'row 1: "label" is missing'),
        (_good_row(completion=None), r'row 1: "completion" is missing'),
        (_good_row(completion=""), r'row 1: "completion" must be a non-empty string'),
        (_good_row(completion=" \n\t"), r'row 1: "completion" must be a non-empty string'),
        (_good_row(completion=["A: 5"]), r'row 1: "completion" must be a non-empty string'),
        (_good_row(prompt=""), r'row 1: "prompt" must be a non-empty string'),
        (_good_row(label=1), r'row 1: "label" is 1 \(int\); labels must be Python bool or numpy.bool_'),
        (_good_row(label=0.0), r'row 1: "label" is 0.0 \(float\)'),
        (_good_row(label="True"), r"row 1: \"label\" is 'True' \(str\)"),
        (["prompt", "completion"], r"row 1: expected a dict"),
    ],
)
def test_validate_names_row_and_field(bad_row, message):
    with pytest.raises(ValueError, match=message):
        validate_outcome_rows([_good_row(), bad_row, _good_row()])


def test_validate_dataset_error_names_source_and_row():
    dataset = Dataset.from_list([_good_row(), _good_row(), _good_row(completion="  ")])
    with pytest.raises(ValueError, match=r'^eval row 2: "completion" must be a non-empty string'):
        validate_outcome_rows(dataset, source="eval")
    with pytest.raises(ValueError, match="dataset has no rows"):
        validate_outcome_rows([])


# --- final answers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 15 = 18\nA: 18", "18"),
        ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
        ("So she pays 1,000 in total. The answer is 1,000.", "1000"),
        ("The answer is: 13520", "13520"),
        ("The final answer is 7 apples", "7"),
        ("#### 1,234,567", "1234567"),
        ("A: 2.50", "2.5"),
        ("A: 18.0", "18"),
        ("A: 0.5", "0.5"),
        ("A: .5", "0.5"),
        ("A: -3", "-3"),
        ("#### -0.75", "-0.75"),
        ("A: -0", "0"),
        ("#### 007", "7"),
        ("A: $1,234.50", "1234.5"),
        ("The answer is $\\$12$.", "12"),
        ("A: 18.", "18"),
        ("So the answer is 29 cents.\n\n# Answer\n\n29", "29"),
        ("The answer is 4. No wait, the answer is 5.", "5"),  # the last marker wins
        ("A: 5/9", None),  # fractions are not plain numbers, and "5" is not their answer
        ("A: 1,00", None),  # malformed thousands group
        ("A: eighteen", None),
        ("3 + 15 = 18", None),  # a number without a marker is not an answer
        ("The name is A: Bob, B: 3", None),  # "A:" counts only at the start of a line
        ("", None),
    ],
)
def test_extract_numeric_answer(text, expected):
    assert extract_numeric_answer(text) == expected


@pytest.mark.slow
def test_extract_numeric_answer_on_every_gsm8k_train_answer(shared_data):
    path = _shared(shared_data, "gsm8k-verifier/gsm8k_train_questions.jsonl")
    answers = [json.loads(line)["answer"] for line in path.read_text().splitlines()]
    assert len(answers) == 7473
    final_lines = [answer.rsplit("####", 1)[1].strip().replace(",", "") for answer in answers]
    assert [extract_numeric_answer(answer) for answer in answers] == final_lines


# --- GSM8K verifier ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_load_gsm8k_verifier(verifier_file):
    dataset = load_gsm8k_verifier(verifier_file)
    assert len(dataset) == 4000
    assert dataset.column_names == ["prompt", "completion", "label", "question_id", "source", "gold_answer"]
    first = dataset[0]
    assert first["prompt"].startswith("Carla is downloading a 200 GB file.")
    assert first["completion"].startswith("First find the total time the download takes without the restart")
    assert first["completion"].endswith("A: 140")
    assert (first["label"], first["question_id"], first["source"], first["gold_answer"]) == (
        False,
        0,
        "6b_finetuning",
        "160",
    )
    assert [(row["source"], row["label"]) for row in dataset.select(range(4))] == [
        ("6b_finetuning", False),
        ("6b_verification", False),
        ("175b_finetuning", False),
        ("175b_verification", True),
    ]
    assert dataset[3]["completion"].endswith("140 minutes + 20 minutes = <<140+20=160>>160 minutes\nA: 160")
    assert dataset["question_id"] == [i // 4 for i in range(4000)]
    correct = Counter(row["source"] for row in dataset if row["label"])
    assert correct == {"6b_finetuning": 224, "6b_verification": 396, "175b_finetuning": 336, "175b_verification": 563}
    # The dataset's `is_correct` is exactly "the final answer equals the reference's", commas aside.
    assert all((extract_numeric_answer(row["completion"]) == row["gold_answer"]) == row["label"] for row in dataset)
    assert Counter(dataset["gold_answer"])["-10"] == 4  # the one negative gold answer


@pytest.mark.slow
def test_load_gsm8k_verifier_sources_and_reference(verifier_file):
    subset = load_gsm8k_verifier(verifier_file, sources=["175b_verification"], include_reference=True)
    assert len(subset) == 2000
    assert subset["source"][:4] == ["175b_verification", "reference", "175b_verification", "reference"]
    references = subset.filter(lambda row: row["source"] == "reference")
    assert all(references["label"]) and references["question_id"] == list(range(1000))
    assert references[0]["completion"].startswith("First find how many gigabytes are in 40% of the file")
    assert references[0]["completion"].endswith("A: 160")
    with pytest.raises(ValueError, match="sources must be a non-empty subset of"):
        load_gsm8k_verifier(verifier_file, sources=["6b"])
    with pytest.raises(ValueError, match="sources must be a non-empty subset of"):
        load_gsm8k_verifier(verifier_file, sources=[])


def test_load_gsm8k_verifier_error_names_the_row(tmp_path):
    solutions = {source: {"is_correct": False, "solution": "1 + 1 = 3\nA: 3"} for source in GSM8K_VERIFIER_SOURCES}
    good = {"question": "1 + 1?", "ground_truth": "1 + 1 = 2\nA: 2", **solutions}
    path = tmp_path / "solutions.jsonl"
    lines = [good, {**good, "ground_truth": "it is two"}]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(ValueError, match=r'solutions.jsonl row 1: "ground_truth" has no final "A: N" answer line'):
        load_gsm8k_verifier(path)
    lines[1] = {**good, "6b_verification": {"is_correct": 1, "solution": "A: 2"}}
    path.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(ValueError, match=r'solutions.jsonl row 1 \(6b_verification\): "label" is 1 \(int\)'):
        load_gsm8k_verifier(path)


# --- split by question ------------------------------------------------------------------------------------------


def _toy(n_questions: int, per_question: int = 3) -> Dataset:
    rows = [
        {"prompt": f"q{q}", "completion": f"s{s}", "label": s == 0, "question_id": q}
        for q in range(n_questions)
        for s in range(per_question)
    ]
    return Dataset.from_list(rows)


def test_split_by_question_is_disjoint_and_seeded():
    dataset = _toy(10)
    train, test = split_by_question(dataset, test_size=0.3, seed=1)
    assert len(set(test["question_id"])) == 3 and (len(train), len(test)) == (21, 9)
    assert set(train["question_id"]).isdisjoint(test["question_id"])
    assert set(train["question_id"]) | set(test["question_id"]) == set(range(10))
    assert train["question_id"] == sorted(train["question_id"])  # row order kept
    again = split_by_question(dataset, test_size=0.3, seed=1)[1]
    assert again["question_id"] == test["question_id"]
    others = {tuple(sorted(set(split_by_question(dataset, 0.3, seed)[1]["question_id"]))) for seed in range(5)}
    assert len(others) > 1
    # At least one question on each side, however small the fraction.
    assert len(set(split_by_question(_toy(3), test_size=0.01)[1]["question_id"])) == 1
    assert len(set(split_by_question(_toy(3), test_size=0.99)[0]["question_id"])) == 1


def test_split_by_question_errors():
    with pytest.raises(ValueError, match=r"test_size must lie in \(0, 1\), got 1.0"):
        split_by_question(_toy(4), test_size=1.0)
    with pytest.raises(ValueError, match=r"test_size must lie in \(0, 1\), got 0"):
        split_by_question(_toy(4), test_size=0)
    with pytest.raises(ValueError, match='needs a "question_id" column'):
        split_by_question(_toy(4).remove_columns("question_id"))
    with pytest.raises(ValueError, match="needs at least 2 questions, got 1"):
        split_by_question(_toy(1))


@pytest.mark.slow
def test_split_gsm8k_verifier_holds_out_whole_questions(verifier_file):
    train, test = split_by_question(load_gsm8k_verifier(verifier_file), test_size=0.2, seed=0)
    assert (len(set(train["question_id"])), len(set(test["question_id"]))) == (800, 200)
    assert (len(train), len(test)) == (3200, 800)
    assert set(train["question_id"]).isdisjoint(test["question_id"])
    assert set(Counter(test["question_id"]).values()) == {4}  # all four solutions of a held-out question

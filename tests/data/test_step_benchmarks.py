"""ProcessBench and PRMBench loaders: the published schemas, labels derived exactly, malformed rows named."""

import json

import pytest

from trl_rewards.data.step_benchmarks import load_prmbench, load_processbench

PB_ROWS = [
    {"id": "gsm8k-0", "generator": "m", "problem": "1+1?", "steps": ["1+1=3", "So 3"], "label": 0},
    {"problem": "2+2?", "steps": ["2+2=4", "So 4"], "label": -1},
]


def test_processbench_rows_and_subset_from_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PB_ROWS))
    rows = load_processbench(path)
    assert rows[0] == {
        "id": "gsm8k-0",
        "subset": "gsm8k",
        "prompt": "1+1?",
        "steps": ["1+1=3", "So 3"],
        "first_error": 0,
    }
    assert rows[1]["first_error"] is None and rows[1]["id"] == "1"
    assert {r["subset"] for r in load_processbench(PB_ROWS, subset="math")} == {"math"}
    assert load_processbench(PB_ROWS)[0]["subset"] == "all"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"steps": ["a"], "label": -1}, 'rows row 1: "problem" is missing'),
        ({"problem": "q", "steps": "a b", "label": -1}, '"steps" must be a non-empty list'),
        ({"problem": "q", "steps": ["a", " "], "label": -1}, r'"steps"\[1\] must be a non-empty string'),
        ({"problem": "q", "steps": ["a"], "label": 1}, r'"label" must be -1 .* in \[0, 0\], got 1'),
        ({"problem": "q", "steps": ["a"], "label": True}, '"label" must be'),
        ({"problem": "q", "steps": ["a"]}, '"label" is missing'),
    ],
)
def test_processbench_malformed_rows_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        load_processbench([PB_ROWS[0], bad])


PRM_ROW = {
    "original_question": "q",
    "modified_question": "q (modified)",
    "question": "q",
    "original_process": ["a", "b"],
    "modified_process": ["a", "b", "c", "d"],
    "error_steps": [2, 4],
    "classification": "circular",
    "idx": "p1",
}


def test_prmbench_labels_from_one_based_error_steps():
    """error_steps [2, 4] (1-based) mark steps 1 and 3 (0-based) wrong; the prompt is the modified question."""
    (row,) = load_prmbench([PRM_ROW])
    assert row == {
        "id": "p1",
        "subset": "circular",
        "prompt": "q (modified)",
        "steps": ["a", "b", "c", "d"],
        "labels": [True, False, True, False],
    }
    without = {k: v for k, v in PRM_ROW.items() if k != "modified_question"}
    assert load_prmbench([without])[0]["prompt"] == "q"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"error_steps": [0, 2]}, r'"error_steps" holds 0, outside 1..4'),
        ({"error_steps": [5]}, '"error_steps" holds 5'),
        ({"error_steps": ["2"]}, '"error_steps" must be a list of 1-based step numbers'),
        ({"error_steps": None}, '"error_steps" is missing'),
        ({"classification": ""}, '"classification" must be a non-empty string'),
        ({"modified_process": []}, '"modified_process" must be a non-empty list'),
    ],
)
def test_prmbench_malformed_rows_are_named(change, message):
    with pytest.raises(ValueError, match=f"rows row 1: {message}"):
        load_prmbench([PRM_ROW, {**PRM_ROW, **change}])


def test_prmbench_published_sample(shared_data):
    """The 3 published rows: every wrong step is one listed in error_steps, counted from 1."""
    sample = shared_data / "prmbench-format" / "sample.jsonl"
    raw = [json.loads(line) for line in sample.read_text().splitlines()]
    rows = load_prmbench(sample)
    assert [r["subset"] for r in rows] == ["redundency"] * 3
    for source, row in zip(raw, rows, strict=True):
        assert len(row["labels"]) == len(source["modified_process"])
        assert [j + 1 for j, ok in enumerate(row["labels"]) if not ok] == sorted(source["error_steps"])

"""The real-data verifier benchmarks (`benchmarks/verifier_vote.py`, `benchmarks/prm_real.py`): their command lines,
their question/problem-disjoint splits, and the PRM summary's hand-checkable helpers."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import prm_real  # noqa: E402
import verifier_vote  # noqa: E402


@pytest.mark.parametrize("script", ["verifier_vote.py", "prm_real.py", "orm_prm_real.py"])
def test_help_runs(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--base" in done.stdout or script == "orm_prm_real.py"


def test_base_choices():
    assert verifier_vote.parse_args(["--base", "smollm2", "--supervision", "all_tokens"]).base == "smollm2"
    with pytest.raises(SystemExit):
        prm_real.parse_args(["--base", "gpt2"])


def test_bad_f1_by_hand():
    # bad = [T, F, T, F]; predicted bad = [T, T, F, F]: tp 1 (row 0), fp 1 (row 1), fn 1 (row 2): F1 = 2/(2+1+1).
    assert prm_real.bad_f1([True, True, False, False], [False, True, False, True]) == pytest.approx(0.5)
    # every step predicted bad: F1 = 2r / (1 + r) with bad rate r = 1/4
    assert prm_real.bad_f1([True] * 4, [False, True, True, True]) == pytest.approx(0.4)


def test_best_cut_separates_a_separable_validation_set():
    # bad scores 0.9, 0.8 are the bad steps: the cut 0.8 predicts exactly them (F1 1); 0.2 would add false alarms.
    assert prm_real.best_cut([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.8


def test_problem_bootstrap_resamples_whole_problems():
    # Problem "a" has 3 rows, "b" one. A resample draws 2 problems: aa (share of a-rows 1), ab (3/4) or bb (0), each
    # with all its rows; a row-level bootstrap would also give e.g. 2/4 or 1/4.
    rows = {"problem": ["a", "a", "a", "b"]}
    seen = []

    def share_of_a(idx):
        seen.append(sum(rows["problem"][i] == "a" for i in idx) / len(idx))
        return seen[-1]

    low, high = prm_real._problem_bootstrap(share_of_a, rows, 200, 0)
    assert set(seen) == {0.0, 0.75, 1.0}
    assert (low, high) == (0.0, 1.0)


def test_splits_are_disjoint(shared_data):
    args = SimpleNamespace(max_problems=40, split_seed=1, seed=0, validation_problems=8, train_rows=20,
                           validation_rows=10, test_rows=10)  # fmt: skip
    train, validation, test = prm_real.splits(args)
    sets = [set(d["prompt"]) for d in (train, validation, test)]
    assert sets[0] and sets[1] and sets[2]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    args = SimpleNamespace(split_seed=1, seed=0, validation_questions=30, train_questions=20, test_questions=40)
    train, validation, test = verifier_vote.splits(args)
    ids = [set(d["question_id"]) for d in (train, validation, test)]
    assert [len(s) for s in ids] == [20, 30, 40]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])

"""`trl-rewards eval-steps`: a tiny PRM end to end on a hand-built ProcessBench file and the shared PRMBench sample;
values equal to the Python API; bad inputs fail before the model loads."""

import json

import pytest

from trl_rewards.data.step_benchmarks import load_prmbench, load_processbench
from trl_rewards.evaluation.step_benchmarks import prmscore, processbench_metrics
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.modeling import load_process_reward_model
from trl_rewards.scripts.cli import main
from trl_rewards.testing import save_tiny, tiny_llama_token_classifier


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    model, tok = tiny_llama_token_classifier(max_position_embeddings=8192)  # PRMBench solutions run to ~2k chars
    return save_tiny(model, tok, tmp_path_factory.mktemp("models") / "prm")


@pytest.fixture(scope="module")
def processbench_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "gsm8k.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "problem": f"{i}+{i}?",
            "steps": [f"{i}+{i}={2 * i + i % 2}", "done"][: 1 + i % 2],
            "label": 0 if i % 2 else -1,
        }
        for i in range(6)
    ]
    rows += [
        {"id": "m0", "problem": "3*3?", "steps": ["3*3=9", "So 9"], "label": -1, "subset": "math"},
        {"id": "m1", "problem": "3*4?", "steps": ["3*4=13", "So 13"], "label": 0, "subset": "math"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _probabilities(prm_dir, rows):
    model, tok = load_process_reward_model(prm_dir, model_style="classifier")
    scorer = ProcessRewardScorer(model, tok)
    return scorer.step_probabilities([r["prompt"] for r in rows], [r["steps"] for r in rows])


def test_processbench_end_to_end_matches_python(tmp_path, prm_dir, processbench_file, caplog):
    out = tmp_path / "pb"
    argv = f"eval-steps --model {prm_dir} --model_style classifier --dataset {processbench_file} "
    argv += f"--format processbench --output_dir {out} --threshold 0.5 --bootstrap 50 --batch_size 3"
    with caplog.at_level("INFO", logger="trl_rewards"):
        assert main(argv.split()) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json"]
    results = json.loads((out / "results.json").read_text())
    rows = load_processbench(processbench_file)
    expected = processbench_metrics(
        _probabilities(prm_dir, rows), [r["first_error"] for r in rows], [r["subset"] for r in rows]
    )
    assert set(results["subsets"]) == {"gsm8k", "math"}
    assert (
        results["average_f1"] == pytest.approx(expected["average_f1"], nan_ok=True)
        or expected["average_f1"] != expected["average_f1"]
    )
    for name in ("gsm8k", "math"):
        for key in ("erroneous_accuracy", "correct_accuracy", "n_erroneous", "n_correct"):
            assert results["subsets"][name][key] == pytest.approx(expected["subsets"][name][key], nan_ok=True)
    assert [p["id"] for p in results["predictions"]] == [r["id"] for r in rows]
    report = (out / "report.md").read_text()
    assert "| gsm8k | 6 | 3 | 3 |" in report and "| math | 2 | 1 | 1 |" in report
    assert any("processbench average F1" in r.getMessage() for r in caplog.records)


def test_prmbench_sample_end_to_end(tmp_path, prm_dir, shared_data):
    sample = shared_data / "prmbench-format" / "sample.jsonl"
    out = tmp_path / "prmbench"
    argv = f"eval-steps --model {prm_dir} --model_style classifier --dataset {sample} --format prmbench "
    assert main((argv + f"--output_dir {out} --bootstrap 0 --max_samples 2").split()) == 0
    results = json.loads((out / "results.json").read_text())
    rows = load_prmbench(sample)[:2]
    expected = prmscore(_probabilities(prm_dir, rows), [r["labels"] for r in rows], [r["subset"] for r in rows])
    assert results["n_solutions"] == 2 and results["headline"]["name"] == "PRMScore"
    assert results["overall"]["n_steps"] == sum(len(r["steps"]) for r in rows)
    assert results["overall"]["prmscore"] == pytest.approx(expected["overall"]["prmscore"], nan_ok=True)
    assert "| redundency | 2 |" in (out / "report.md").read_text()


def test_bad_inputs_fail_before_the_model_loads(tmp_path):
    """The model path does not exist: each error below must come from the check that precedes loading."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "q", "steps": ["a"], "label": 0}) + "\n")
    bad.write_text(bad.read_text() + json.dumps({"problem": "q", "steps": ["a"], "label": 4}) + "\n")
    base = f"eval-steps --model {tmp_path / 'missing'} --dataset {bad} --output_dir {tmp_path / 'o'}".split()
    with pytest.raises(ValueError, match=r"bad.jsonl.*dataset row 1: \"label\" must be"):
        main(base + ["--format", "processbench"])
    with pytest.raises(ValueError, match="--format is required"):
        main(base)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        main(base[:-1] + [str(tmp_path / "file"), "--format", "processbench"])
    with pytest.raises(ValueError, match="threshold must lie in"):
        main(base + ["--format", "prmbench", "--threshold", "1.5"])

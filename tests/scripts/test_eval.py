"""`trl-rewards eval` and `trl-rewards score`: files written, values equal to the Python API, the cache reused,
every option honoured or rejected; plus a real-data run on HH-RLHF with MiniLM."""

import gzip
import json

import pytest

from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.modeling import load_reward_model
from trl_rewards.scripts.cli import main
from trl_rewards.testing import save_tiny, tiny_llama_reward_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tok = tiny_llama_reward_model()
    return save_tiny(model, tok, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(12):
            row = {"prompt": f"Q{i}? ", "chosen": "yes " * (1 + i % 3), "rejected": "no" + "!" * (i % 4)}
            f.write(json.dumps({**row, "subset": ["math", "chat", "code"][i % 3]}) + "\n")
    return str(path)


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_eval_writes_report_plots_and_matches_python(tmp_path, tiny_dir, pairs_file):
    out = tmp_path / "eval"
    argv = (
        f"eval --model {tiny_dir} --dataset {pairs_file} --subset_column subset --output_dir {out} --bootstrap 30 "
        f"--max_samples 9 --ties half --cache_path {tmp_path / 'scores.sqlite'}"
    ).split() + ["--category_weights", "{reasoning: [math, code], chat: {chat: 1}}"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.png",
        "report.md",
        "results.json",
        "reward_distributions.png",
        "subset_accuracy.png",
    ]
    for name in results["figures"].values():
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 8_000
    # the same numbers as the Python API on the first 9 rows
    rows = _rows(pairs_file)[:9]
    model, tok = load_reward_model(tiny_dir)
    scorer = RewardScorer(model, tok)
    expected = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    assert results["scores"]["chosen"] == pytest.approx(expected, abs=1e-5)
    assert results["overall"]["count"] == 9 and results["config"]["ties"] == "half"
    assert set(results["categories"]) == {"reasoning", "chat"}
    reasoning = results["categories"]["reasoning"]
    assert reasoning["weights"] == {"math": 3, "code": 3}
    assert reasoning["score"] == pytest.approx(
        (results["subsets"]["math"]["accuracy"] + results["subsets"]["code"]["accuracy"]) / 2
    )
    assert results["subsets"]["math"]["accuracy_ci"][0] <= results["subsets"]["math"]["accuracy"]
    assert results["cache"]["misses"] == 18 and results["cache"]["hits"] == 0
    assert "## Categories" in (out / "report.md").read_text()
    # a second run reads every score from the cache
    assert main(argv + ["--plots", "false"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["cache"] == {**results["cache"], "hits": 18, "misses": 0}
    assert again["scores"]["chosen"] == results["scores"]["chosen"]


def test_score_writes_every_row_with_its_score(tmp_path, tiny_dir):
    source = tmp_path / "rows.jsonl"
    rows = [{"prompt": "Hi ", "completion": "hello", "id": 1}, {"prompt": "2+2=", "completion": "4", "id": 2}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out" / "scored.jsonl"
    assert main(["score", "--model", tiny_dir, "--input", str(source), "--output", str(output)]) == 0
    scored = _rows(output)
    model, tok = load_reward_model(tiny_dir)
    expected = RewardScorer(model, tok).score(["Hi ", "2+2="], ["hello", "4"])
    assert [r["id"] for r in scored] == [1, 2]
    assert [r["score"] for r in scored] == pytest.approx(expected, abs=1e-5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "text": "t"}) + "\n")
    with pytest.raises(ValueError, match="needs a 'completion' column"):
        main(["score", "--model", tiny_dir, "--input", str(bad), "--output", str(output)])


def test_eval_rejects_what_it_cannot_do(tmp_path, tiny_dir, pairs_file, capsys):
    base = ["eval", "--dataset", pairs_file, "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--model got 2 models: ensembles are not wired"):
        main(base + ["--model", tiny_dir, tiny_dir])
    with pytest.raises(ValueError, match="--model is required"):
        main(base)
    with pytest.raises(ValueError, match="pass --split for the Hub dataset"):
        main(["eval", "--model", tiny_dir, "--dataset", "org/some-dataset", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="category_weights must be a mapping"):
        main(base + ["--model", tiny_dir, "--subset_column", "subset", "--category_weights", "[a, b]"])
    with pytest.raises(SystemExit):
        main(base + ["--model", tiny_dir, "--ties", "coin"])
    assert "invalid choice: 'coin'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="bootstrap must be >= 0"):
        main(base + ["--model", tiny_dir, "--bootstrap", "-1"])
    assert main(["--help"]) == 0
    assert "eval " in capsys.readouterr().out


@pytest.mark.slow
def test_eval_on_hh_rlhf_with_minilm(tmp_path, shared_data, minilm_path):
    """A MiniLM Bradley-Terry model trained for a few steps on HH-RLHF harmless-base, evaluated on dev rows."""
    train = tmp_path / "train.jsonl"
    with gzip.open(shared_data / "hh-rlhf" / "harmless-base.train.jsonl.gz", "rt") as f:
        train.write_text("".join(line for _, line in zip(range(16), f, strict=False)))
    model_dir = str(tmp_path / "bt")
    train_argv = (
        f"train bt --model_name_or_path {minilm_path} --dataset_name {train} --output_dir {model_dir} --max_steps 1 "
        "--per_device_train_batch_size 16 --max_length 128 --report_to none --save_strategy no "
        "--gradient_checkpointing false --learning_rate 5e-5"
    )
    assert main(train_argv.split()) == 0
    out = tmp_path / "eval"
    dev = shared_data / "hh-rlhf" / "harmless-base.dev.jsonl.gz"
    eval_argv = f"eval --model {model_dir} --dataset {dev} --max_samples 16 --max_length 128 --output_dir {out}"
    assert main(eval_argv.split() + ["--bootstrap", "50"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["count"] == 16 and results["config"]["length_unit"] == "tokens"
    assert 0 <= results["overall"]["accuracy"] <= 1 and results["n_truncated"] > 0
    assert results["final_score"] == results["overall"]["accuracy"]
    for name in ("reward_distributions.png", "calibration.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert "Final score" in (out / "report.md").read_text()


@pytest.mark.parametrize("command", ["eval", "score"])
def test_help_renders(command, capsys):
    """Every help string survives argparse's %-formatting."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--cache_path" in capsys.readouterr().out


def test_scorer_options_reach_the_scorer(tiny_dir):
    from trl_rewards.scripts.arguments import ScorerArguments
    from trl_rewards.scripts.eval import load_scorer

    args = ScorerArguments(batch_size=3, max_tokens_per_batch=64, max_length=16, dtype="bfloat16", device="cpu")
    scorer = load_scorer(tiny_dir, args)
    assert (scorer.batch_size, scorer.max_tokens_per_batch, scorer.max_length) == (3, 64, 16)
    assert str(scorer.device) == "cpu" and str(next(scorer.model.parameters()).dtype) == "torch.bfloat16"
    with pytest.raises(ValueError, match="normalize=True needs `reward_mean`"):  # the tiny model has no statistics
        load_scorer(tiny_dir, ScorerArguments(normalize=True))
    with pytest.raises(ValueError, match="dtype must be one of"):
        ScorerArguments(dtype="int8")
    # the tokenizer sets no model_max_length: the default is the model's position limit, so long rows cannot crash
    limit = load_scorer(tiny_dir, ScorerArguments()).model.config.max_position_embeddings
    assert load_scorer(tiny_dir, ScorerArguments()).max_length == limit

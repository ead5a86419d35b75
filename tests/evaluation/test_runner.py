"""Categorized evaluation: hand-derived per-subset accuracies and category averages, prompt splitting, adapters,
degenerate inputs and the written report."""

import json
import math

import pytest

from trl_rewards.evaluation.report import render_markdown, write_report
from trl_rewards.evaluation.runner import (
    RewardFunctionScorer,
    aggregate_categories,
    as_scorer,
    evaluate_preferences,
    scores_depend_on_batch,
)
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.testing import tiny_llama_reward_model


class LookupScorer:
    """Scores a completion by a fixed table; records what it was asked."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def score(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [float(self.table[c]) for c in completions]


TABLE = {"good": 2, "bad": 1, "fine": 1, "meh": 1, "yes!": 3, "no": 0, "ok": 0, "nope": 1, "great": 5, "awful": -1}
ROWS = [
    {"prompt": "Q1 ", "chosen": "good", "rejected": "bad", "subset": "s1"},  # 2 > 1: win
    {"prompt": "Q2 ", "chosen": "fine", "rejected": "meh", "subset": "s1"},  # 1 = 1: tie
    {"prompt": "Q3 ", "chosen": "yes!", "rejected": "no", "subset": "s2"},  # 3 > 0: win
    {"prompt": "Q4 ", "chosen": "ok", "rejected": "nope", "subset": "s2"},  # 0 < 1: loss
    {"prompt": "Q5 ", "chosen": "great", "rejected": "awful", "subset": "s2"},  # 5 > -1: win
]


def test_per_subset_and_final_scores_by_hand():
    """
    ties="loss": s1 = 1 win / 2 = 0.5; s2 = 2 wins / 3 = 2/3; overall 3/5 = 0.6.
    No categories: each subset is a category, final = (0.5 + 2/3) / 2 = 7/12.
    Length baseline (characters; LookupScorer has no tokenizer): s1: 4>3, 4>3 -> 1.0; s2: 4>2 win, 2<4 loss,
    5=5 tie -> 1/3; overall 3/5 with length tie rate 1/5.
    """
    results = evaluate_preferences(LookupScorer(TABLE), ROWS, subset_column="subset")
    assert results["subsets"]["s1"]["accuracy"] == pytest.approx(0.5)
    assert results["subsets"]["s2"]["accuracy"] == pytest.approx(2 / 3)
    assert results["overall"]["accuracy"] == pytest.approx(0.6)
    assert results["overall"]["tie_rate"] == pytest.approx(0.2)
    assert results["final_score"] == pytest.approx(7 / 12)
    assert results["subsets"]["s1"]["length_baseline_accuracy"] == pytest.approx(1.0)
    assert results["subsets"]["s2"]["length_baseline_accuracy"] == pytest.approx(1 / 3)
    assert results["overall"]["length_baseline_accuracy"] == pytest.approx(0.6)
    assert results["overall"]["length_tie_rate"] == pytest.approx(0.2)
    assert results["config"]["length_unit"] == "characters"
    assert results["scores"]["chosen"] == [2.0, 1.0, 3.0, 0.0, 5.0]
    assert results["scores"]["subset"] == ["s1", "s1", "s2", "s2", "s2"]


def test_category_weights_by_count_and_given():
    """
    {"all": [s1, s2]} weights by counts: (2 * 0.5 + 3 * 2/3) / 5 = 0.6, the pooled accuracy.
    ties="half": s1 = (1 + 0.5) / 2 = 0.75, s2 = 2/3; {"x": {s1: 1, s2: 3}} = (0.75 + 3 * 2/3) / 4 = 0.6875;
    with a second category {"y": [s2]} = 2/3, final = (0.6875 + 2/3) / 2 = 0.6770833...
    """
    scorer = LookupScorer(TABLE)
    pooled = evaluate_preferences(scorer, ROWS, subset_column="subset", category_weights={"all": ["s1", "s2"]})
    assert pooled["categories"]["all"]["score"] == pytest.approx(0.6)
    assert pooled["categories"]["all"]["weights"] == {"s1": 2, "s2": 3}
    assert pooled["final_score"] == pytest.approx(0.6)
    weighted = evaluate_preferences(
        scorer, ROWS, subset_column="subset", category_weights={"x": {"s1": 1, "s2": 3}, "y": ["s2"]}, ties="half"
    )
    assert weighted["subsets"]["s1"]["accuracy"] == pytest.approx(0.75)
    assert weighted["categories"]["x"]["score"] == pytest.approx(0.6875)
    assert weighted["categories"]["y"]["score"] == pytest.approx(2 / 3)
    assert weighted["final_score"] == pytest.approx((0.6875 + 2 / 3) / 2)


def test_aggregate_categories_pure_and_validated():
    """a: 1.0 (2 pairs), b: 0.5 (6), c: 0.25 (4). {"x": [a, b]} = (2 + 3) / 8 = 0.625; {"y": {b: 1, c: 3}} =
    (0.5 + 0.75) / 4 = 0.3125; final 0.46875; c and b both listed, so nothing is uncategorized. Without categories:
    (1 + 0.5 + 0.25) / 3."""
    subsets = {
        "a": {"accuracy": 1.0, "count": 2},
        "b": {"accuracy": 0.5, "count": 6},
        "c": {"accuracy": 0.25, "count": 4},
    }
    out = aggregate_categories(subsets, {"x": ["a", "b"], "y": {"b": 1, "c": 3}})
    assert out["categories"]["x"]["score"] == pytest.approx(0.625)
    assert out["categories"]["y"]["score"] == pytest.approx(0.3125)
    assert out["final_score"] == pytest.approx(0.46875)
    assert out["uncategorized"] == []
    assert aggregate_categories(subsets)["final_score"] == pytest.approx(1.75 / 3)
    assert aggregate_categories(subsets, {"x": ["a"]})["uncategorized"] == ["b", "c"]
    with pytest.raises(ValueError, match=r"absent from the data: \['zz'\]"):
        aggregate_categories(subsets, {"x": ["a", "zz"]})
    with pytest.raises(ValueError, match="weight of 'a' must be a finite number >= 0"):
        aggregate_categories(subsets, {"x": {"a": -1}})
    with pytest.raises(ValueError, match="weights sum to 0"):
        aggregate_categories(subsets, {"x": {"a": 0, "b": 0}})
    with pytest.raises(ValueError, match="not a bare string"):
        aggregate_categories(subsets, {"x": "a"})
    with pytest.raises(ValueError, match="lists no subsets"):
        aggregate_categories(subsets, {"x": []})


def test_implicit_prompt_is_split_with_trl_extract_prompt():
    """HH-RLHF style rows: the scorer receives the shared dialogue as prompt and only the answers as completions."""
    rows = [
        {"chosen": "\n\nHuman: hi?\n\nAssistant: Hello there", "rejected": "\n\nHuman: hi?\n\nAssistant: Go away"},
    ]
    scorer = LookupScorer({" Hello there": 1.0, " Go away": 0.0})  # TRL keeps the space with the completion
    results = evaluate_preferences(scorer, rows)
    assert scorer.calls == [(["\n\nHuman: hi?\n\nAssistant:"] * 2, [" Hello there", " Go away"])]  # one call
    assert results["overall"]["accuracy"] == 1.0
    assert results["final_score"] == 1.0 and results["subsets"] == {}


def test_reward_function_adapter_and_none_rows():
    def length_reward(prompts, completions, completion_ids=None, **kwargs):
        return [float(len(c)) if c != "no" else None for c in completions]

    wrapped = as_scorer(length_reward)
    assert isinstance(wrapped, RewardFunctionScorer) and wrapped.__name__ == "length_reward"
    assert wrapped.score(["p", "p"], ["abc", "de"]) == [3.0, 2.0]
    scorer = LookupScorer(TABLE)
    assert as_scorer(scorer) is scorer
    with pytest.raises(
        ValueError, match=r"the rejected completion of row 2\): .*'length_reward' returned None for row 7"
    ):
        evaluate_preferences(length_reward, ROWS)
    with pytest.raises(ValueError, match="returned nan for row 0"):
        as_scorer(lambda prompts, completions: [math.nan]).score(["p"], ["c"])
    with pytest.raises(ValueError, match="returned 2 rewards for 1"):
        as_scorer(lambda prompts, completions: [1.0, 2.0]).score(["p"], ["c"])
    with pytest.raises(TypeError, match="neither a scorer"):
        as_scorer(42)


def test_degenerate_inputs_give_documented_values():
    """One pair: its accuracy, and a (v, v) interval. Constant scores: every pair ties, so accuracy 0 ("loss"),
    0.5 ("half"), p = 0.5 everywhere: ECE = |0 - 0.5| = 0.5, Brier = 0.25; "exclude" raises, naming the set."""
    one = evaluate_preferences(LookupScorer(TABLE), ROWS[:1], bootstrap=50)
    assert one["overall"]["accuracy"] == 1.0 and one["overall"]["accuracy_ci"] == [1.0, 1.0]
    constant = LookupScorer({k: 0.0 for k in TABLE})
    lost = evaluate_preferences(constant, ROWS, subset_column="subset")
    assert lost["overall"]["accuracy"] == 0.0 and lost["final_score"] == 0.0
    assert lost["overall"]["tie_rate"] == 1.0
    assert lost["overall"]["ece"] == pytest.approx(0.5) and lost["overall"]["brier"] == pytest.approx(0.25)
    assert evaluate_preferences(constant, ROWS, ties="half")["overall"]["accuracy"] == 0.5
    with pytest.raises(ValueError, match="all pairs: every pair of chosen and rejected is a tie"):
        evaluate_preferences(constant, ROWS, ties="exclude")
    partial = LookupScorer({**TABLE, "fine": 1.0, "meh": 1.0})  # s1 has one tie, s2 none: exclude is defined
    assert (
        evaluate_preferences(partial, ROWS, ties="exclude", subset_column="subset")["subsets"]["s1"]["accuracy"] == 1
    )


def test_input_errors_name_the_problem():
    scorer = LookupScorer(TABLE)
    with pytest.raises(ValueError, match="subset_column 'cat' is not a column"):
        evaluate_preferences(scorer, ROWS, subset_column="cat")
    with pytest.raises(ValueError, match="needs subset_column"):
        evaluate_preferences(scorer, ROWS, category_weights={"a": ["s1"]})
    with pytest.raises(ValueError, match='row 1: "subset" is empty'):
        evaluate_preferences(scorer, [ROWS[0], {**ROWS[1], "subset": ""}], subset_column="subset")
    with pytest.raises(ValueError, match="pre-tokenized"):
        evaluate_preferences(scorer, [{"chosen_ids": [1, 2], "rejected_ids": [3]}])
    with pytest.raises(ValueError, match="ties must be one of"):
        evaluate_preferences(scorer, ROWS, ties="coin")
    with pytest.raises(ValueError, match='row 0: "chosen" and "rejected" are identical'):
        evaluate_preferences(scorer, [{"prompt": "p", "chosen": "ok", "rejected": "ok"}])


def test_reward_scorer_counts_tokens_and_truncations(tmp_path):
    """A real RewardScorer: lengths in tokens of its tokenizer (one per character here), truncations reported."""
    model, tok = tiny_llama_reward_model()
    scorer = RewardScorer(model, tok, max_length=8)
    results = evaluate_preferences(scorer, ROWS, subset_column="subset", bootstrap=20)
    assert results["config"]["length_unit"] == "tokens"
    assert results["scores"]["chosen_length"] == [4, 4, 4, 2, 5]
    # "<s>" + "Q1 good" + "</s>" = 9 tokens > 8: every chosen and rejected sequence of 4+ characters is truncated
    assert results["n_truncated"] == sum(
        len(r["prompt"] + c) + 2 > 8 for r in ROWS for c in (r["chosen"], r["rejected"])
    )
    direct = scorer.score([r["prompt"] for r in ROWS], [r["chosen"] for r in ROWS])
    assert results["scores"]["chosen"] == pytest.approx(direct, abs=1e-6)


def test_write_report(tmp_path):
    results = evaluate_preferences(
        LookupScorer(TABLE), ROWS, subset_column="subset", category_weights={"all": ["s1"]}, bootstrap=20
    )
    figure = tmp_path / "out" / "reward_distributions.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    paths = write_report(results, tmp_path / "out", {"Rewards": str(figure)})
    saved = json.loads(open(paths["results"]).read())
    assert saved["final_score"] == pytest.approx(0.5) and saved["figures"] == {"Rewards": "reward_distributions.png"}
    assert saved["uncategorized"] == ["s2"]
    report = open(paths["report"]).read()
    assert "**Final score: 0.500**" in report
    assert "| s2 | 3 | 0.667 [" in report  # accuracy with its bootstrap interval
    assert "| all | 0.500 | 2 | s1: 2 |" in report  # a listed subset weighs its count
    assert "![Rewards](reward_distributions.png)" in report
    assert "Subsets in no category (not in the final score): s2." in report
    assert render_markdown(results).count("\n## ") == 2  # categories and subsets, no figures section


def test_category_errors_come_before_any_scoring():
    scorer = LookupScorer(TABLE)
    with pytest.raises(ValueError, match=r"category 'x' lists subsets absent from the data: \['s3'\]"):
        evaluate_preferences(scorer, ROWS, subset_column="subset", category_weights={"x": ["s1", "s3"]})
    assert scorer.calls == []


def test_batch_normalizing_ensemble_scores_both_sides_in_one_call():
    """A RewardEnsemble z-scores each call. Chosen lengths [4, 4, 4, 2, 5], rejected [3, 3, 2, 4, 5]: z-scored
    together, the order of every pair is kept: 3 wins, 1 loss, 1 tie (5 = 5), accuracy 0.6 as with raw lengths.
    (z-scored separately, each side would be centred on its own mean: 4 vs 3 would become 0.35 vs -0.2 ...)."""
    from trl_rewards.rewards.ensemble import RewardEnsemble

    def length(prompts, completions, **kwargs):
        return [float(len(c)) for c in completions]

    ensemble = RewardEnsemble([length], normalization="batch")
    assert scores_depend_on_batch(as_scorer(ensemble)) and not scores_depend_on_batch(LookupScorer(TABLE))
    results = evaluate_preferences(ensemble, ROWS)
    assert results["overall"]["accuracy"] == pytest.approx(0.6) and results["overall"]["tie_rate"] == 0.2
    with pytest.raises(ValueError, match="z-scores groups of consecutive completions"):
        as_scorer(RewardEnsemble([length], normalization="group", num_generations=2))

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
    Length baseline (characters; LookupScorer has no tokenizer; equal lengths are coin flips): s1: 4>3, 4>3 -> 1.0;
    s2: 4>2 win, 2<4 loss, 5=5 tie (0.5) -> 1.5/3 = 0.5; overall 3.5/5 = 0.7 with length tie rate 1/5.
    """
    results = evaluate_preferences(LookupScorer(TABLE), ROWS, subset_column="subset")
    assert results["subsets"]["s1"]["accuracy"] == pytest.approx(0.5)
    assert results["subsets"]["s2"]["accuracy"] == pytest.approx(2 / 3)
    assert results["overall"]["accuracy"] == pytest.approx(0.6)
    assert results["overall"]["tie_rate"] == pytest.approx(0.2)
    assert results["final_score"] == pytest.approx(7 / 12)
    assert results["subsets"]["s1"]["length_baseline_accuracy"] == pytest.approx(1.0)
    assert results["subsets"]["s2"]["length_baseline_accuracy"] == pytest.approx(0.5)
    assert results["overall"]["length_baseline_accuracy"] == pytest.approx(0.7)
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


def test_labels_set_the_outcome_of_each_pair():
    """
    Labels [0, 1, 0, 0.5] on (good 2, bad 1), (yes! 3, no 0), (ok 0, nope 1), (great 5, awful -1): pair 0 is wrong
    (the label says rejected wins), pairs 1 and 2 right, pair 3 a tie (label 0.5). ties="loss": 2/4; "half": 2.5/4;
    "exclude": 2/3. Ignoring the labels gives 3/4.
    ECE, q = sigmoid(chosen - rejected): pairs 0, 2 have confidence sigmoid(1) = 0.731059 (bin (0.70, 0.75]) and
    correctness 0 (q > 0.5, p = 0) and 1 (q < 0.5, 1 - p = 1); pairs 1, 3 confidences sigmoid(3) = 0.952574 and
    sigmoid(6) = 0.997527 (bin (0.95, 1]), correctness 1 and 0.5.
    ECE = (|1 - 2 * 0.731059| + |1.5 - 0.952574 - 0.997527|) / 4 = (0.462117 + 0.450101) / 4 = 0.228055.
    Length baseline (characters), by label: bad(3) < good(4) loss; yes!(4) > no(2) win; nope(4) > ok(2) win; the
    label-0.5 pair is a coin flip: 2.5/4.
    """
    rows = [{**row, "label": label} for row, label in zip([ROWS[0], *ROWS[2:]], [0.0, 1.0, 0.0, 0.5], strict=True)]
    results = evaluate_preferences(LookupScorer(TABLE), rows)
    overall = results["overall"]
    assert overall["accuracy"] == pytest.approx(0.5)
    assert overall["ece"] == pytest.approx(0.228055, abs=1e-6)
    q = [1 / (1 + math.exp(-d)) for d in (1, 3, -1, 6)]
    expected_brier = sum((qi - p) ** 2 for qi, p in zip(q, [0.0, 1.0, 0.0, 0.5], strict=True)) / 4
    assert overall["brier"] == pytest.approx(expected_brier)
    assert overall["length_baseline_accuracy"] == pytest.approx(0.625)
    assert sum(overall["calibration_curve"]["count"]) == 4
    assert evaluate_preferences(LookupScorer(TABLE), rows, ties="half")["final_score"] == pytest.approx(0.625)
    assert evaluate_preferences(LookupScorer(TABLE), rows, ties="exclude")["final_score"] == pytest.approx(2 / 3)


def test_labels_of_one_change_nothing():
    """Every label 1 is the unlabelled case: the same report, bootstrap intervals included."""
    plain = evaluate_preferences(LookupScorer(TABLE), ROWS, subset_column="subset", bootstrap=30)
    ones = evaluate_preferences(
        LookupScorer(TABLE), [{**row, "label": 1.0} for row in ROWS], subset_column="subset", bootstrap=30
    )
    for key in ("overall", "subsets", "final_score"):
        assert dict(_leaves(ones[key])) == pytest.approx(dict(_leaves(plain[key]))), key


def _leaves(value, path=""):
    """(path, number) for every number in nested dicts and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}/{i}")
    else:
        yield path, value


def test_subset_whose_lengths_all_tie_has_a_coin_flip_baseline_under_exclude(tmp_path):
    """Subset "same": good/nope and yes!/fine are 4 characters each. The baseline counts equal lengths as coin flips
    whatever the model's tie policy, so that subset gets 0.5 with length tie rate 1 (it used to abort the whole
    report under ties="exclude"), and the other subset's baseline is 1.0 (5 > 2); overall (0.5 + 0.5 + 1) / 3."""
    rows = [
        {"prompt": "Q1 ", "chosen": "good", "rejected": "nope", "subset": "same"},
        {"prompt": "Q2 ", "chosen": "yes!", "rejected": "fine", "subset": "same"},
        {"prompt": "Q3 ", "chosen": "great", "rejected": "no", "subset": "other"},
    ]
    results = evaluate_preferences(LookupScorer(TABLE), rows, subset_column="subset", ties="exclude")
    assert results["subsets"]["same"]["length_baseline_accuracy"] == 0.5
    assert results["subsets"]["same"]["length_tie_rate"] == 1.0
    assert results["subsets"]["other"]["length_baseline_accuracy"] == 1.0
    assert results["overall"]["length_baseline_accuracy"] == pytest.approx(2 / 3)
    assert results["final_score"] == 1.0
    write_report(results, tmp_path)
    assert "| same | 2 |" in (tmp_path / "report.md").read_text()


def test_report_writes_strict_json_for_undefined_metrics(tmp_path):
    """An undefined metric (NaN: e.g. accuracy under ties="exclude" of a subset that is all ties) is written as
    `null`, not as the bare `NaN` that strict JSON readers reject, and shown as "–" in the Markdown."""
    results = evaluate_preferences(LookupScorer(TABLE), ROWS, subset_column="subset")
    results["subsets"]["s1"]["accuracy"] = float("nan")
    paths = write_report(results, tmp_path)
    text = open(paths["results"]).read()
    assert "NaN" not in text and json.loads(text)["subsets"]["s1"]["accuracy"] is None
    assert "| s1 | 2 | – |" in open(paths["report"]).read()


def test_an_async_reward_function_is_evaluated_like_a_sync_one():
    async def length_reward(prompts, completions, completion_ids=None, **kwargs):
        return [float(len(c)) for c in completions]

    assert as_scorer(length_reward).score(["p", "p"], ["abc", "de"]) == [3.0, 2.0]
    table = {completion: float(len(completion)) for row in ROWS for completion in (row["chosen"], row["rejected"])}
    assert evaluate_preferences(length_reward, ROWS)["overall"]["accuracy"] == pytest.approx(
        evaluate_preferences(LookupScorer(table), ROWS)["overall"]["accuracy"]
    )

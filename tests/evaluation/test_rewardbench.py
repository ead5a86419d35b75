"""RewardBench v1/v2 scoring against hand computations on rows in the published layouts; pairwise scorers; the
`trl-rewards eval --protocol` path on a tiny model."""

import json
import math

import numpy as np
import pytest

from trl_rewards.evaluation.rewardbench import (
    DEFAULT_PROMPT_TEMPLATE,
    best_of_n_result,
    evaluate_rewardbench,
    format_input,
    ties_prompt_stats,
    ties_score,
    v1_rows,
    v1_scores,
    v2_rows,
)


class TableScorer:
    """Pointwise scorer: the score of a completion is looked up by its text (the prompt is ignored)."""

    tokenizer = None

    def __init__(self, table):
        self.table = table
        self.calls = []

    def score(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [float(self.table[c if isinstance(c, str) else c[-1]["content"]]) for c in completions]


class PairScorer:
    """Pairwise scorer with hidden qualities q: P(a > b) = sigmoid(q_a - q_b) (symmetric, so order-averaged)."""

    def __init__(self, table):
        self.table = table

    def win_probability(self, prompts, first, second):
        assert len(prompts) == len(first) == len(second)
        return [1 / (1 + math.exp(self.table[b] - self.table[a])) for a, b in zip(first, second, strict=True)]


def test_v1_scores_by_hand():
    """Chat = (100*1.0 + 28*0.5)/128; Reasoning = (984*0.5 + 164*1.0)/1148 (math-prm counted 984);
    prior = mean(0.6, 0.4) = 0.5; score = (2*(0.890625 + 0.25 + 0.75 + 656/1148) + 0.5) / 9."""
    accuracy = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "mt-bench-hard": 0.25, "donotanswer": 0.75,
                "math-prm": 0.5, "hep-python": 1.0, "shp": 0.6, "summarize": 0.4, "my-own": 0.1}  # fmt: skip
    out = v1_scores(accuracy)
    assert out["sections"]["Chat"] == pytest.approx(114 / 128)
    assert out["sections"]["Chat Hard"] == pytest.approx(0.25)
    assert out["sections"]["Safety"] == pytest.approx(0.75)
    assert out["sections"]["Reasoning"] == pytest.approx(656 / 1148)
    assert out["prior_sets"] == pytest.approx(0.5)
    assert out["score"] == pytest.approx((2 * (114 / 128 + 0.25 + 0.75 + 656 / 1148) + 0.5) / 9)
    assert out["unscored"] == ["my-own"]
    # without prior sets: the plain mean of the sections present
    no_prior = v1_scores({"alpacaeval-easy": 1.0, "donotanswer": 0.5})
    assert no_prior["prior_sets"] is None and no_prior["score"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="subset"):
        v1_scores({"nothing-known": 1.0})


def test_best_of_n_result_shares_ties():
    assert best_of_n_result([3, 1, 2, 0]) == 1.0
    assert best_of_n_result([3, 3, 1, 0]) == 0.5
    assert best_of_n_result([2, 2, 2, 0]) == pytest.approx(1 / 3)
    assert best_of_n_result([1, 3, 0, 0]) == 0.0


def test_ties_score_by_hand():
    """Prompt 0: ref [5 | 1, 2] margin 3; tied [5, 4 | 1, 2] margin 2, spread 1. Prompt 1: ref [1 | 2] margin -1;
    tied [3, 1 | 2] margin -1, spread 2. Accuracies 0.5 and 0.5; preferred: [2 > 1, -1 > 2] -> 0.5; hard (min of
    ref and tied margins [2, -1]) -> 0.5; margin term mean(tanh(2/1 - 1), tanh(-1/2 - 1))."""
    stats = {
        ("ref", "0"): ties_prompt_stats([5, 1, 2], 1),
        ("tied", "0"): ties_prompt_stats([5, 4, 1, 2], 2),
        ("ref", "1"): ties_prompt_stats([1, 2], 1),
        ("tied", "1"): ties_prompt_stats([3, 1, 2], 2),
    }
    assert stats[("ref", "0")] == (True, None, 3)
    assert stats[("tied", "0")] == (True, 1, 2)
    assert stats[("tied", "1")] == (False, 2, -1)
    out = ties_score(stats)
    term = (math.tanh(1.0) + math.tanh(-1.5)) / 2
    assert out["ref_accuracy"] == 0.5 and out["tied_accuracy"] == 0.5
    assert out["correctness_preferred"] == 0.5 and out["correctness_preferred_hard"] == 0.5
    assert out["correctness_margin_score"] == pytest.approx(term)
    assert out["score"] == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * term)


V1_ROWS = [
    {"prompt": "p0", "chosen": "good0", "rejected": "bad0", "subset": "alpacaeval-easy", "id": 0},
    {"prompt": "p1", "chosen": "good1", "rejected": "bad1", "subset": "alpacaeval-easy", "id": 1},
    {"prompt": "p2", "chosen": "tie", "rejected": "tie2", "subset": "donotanswer", "id": 2},
    {"prompt": "p3", "chosen": "good3", "rejected": "bad3", "subset": "math-prm", "id": 3},
    {  # a prior-set row: whole conversations, the last message is the answer
        "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "good4"}],
        "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bad4"}],
        "subset": "shp",
    },
]
V1_TABLE = {"good0": 2, "bad0": 1, "good1": 0, "bad1": 1, "tie": 1, "tie2": 1, "good3": 5, "bad3": -5, "good4": 1,
            "bad4": 0}  # fmt: skip


def test_v1_end_to_end_with_a_pointwise_scorer():
    """Row results [1, 0, 0 (an exact tie is a loss), 1, 1]: Chat 0.5, Safety 0, Reasoning 1, prior 1."""
    scorer = TableScorer(V1_TABLE)
    out = evaluate_rewardbench(scorer, V1_ROWS, "v1", bootstrap=50)
    assert out["per_row"] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert out["sections"] == {"Chat": 0.5, "Safety": 0.0, "Reasoning": 1.0}
    assert out["score"] == pytest.approx((2 * 1.5 + 1.0) / 7)
    assert out["counts"] == {"alpacaeval-easy": 2, "donotanswer": 1, "math-prm": 1, "shp": 1}
    low, high = out["score_ci"]
    assert low <= out["score"] <= high
    # text prompts rendered with the HH template, the conversation's prompt rendered as a dialogue
    prompts = scorer.calls[0][0]
    assert prompts[0] == DEFAULT_PROMPT_TEMPLATE.format(prompt="p0")
    assert prompts[4] == "\n\nHuman: hi\n\nAssistant: "


def test_v1_pairwise_scorer_matches_pointwise_decisions():
    table = {k: float(v) for k, v in V1_TABLE.items()}
    pairwise = evaluate_rewardbench(PairScorer(table), V1_ROWS, "v1", bootstrap=0)
    pointwise = evaluate_rewardbench(TableScorer(table), V1_ROWS, "v1", bootstrap=0)
    assert pairwise["per_row"] == pointwise["per_row"] and pairwise["score"] == pointwise["score"]
    assert pairwise["scorer_kind"] == "pairwise" and pairwise["score_ci"] is None


V2_ROWS = [
    {"id": "m0", "prompt": "q", "chosen": ["a"], "rejected": ["b", "c", "d"], "num_correct": 1, "subset": "Math"},
    {"id": "m1", "prompt": "q", "chosen": ["e"], "rejected": ["f", "g", "h"], "num_correct": 1, "subset": "Math"},
    {"id": "f0", "prompt": "q", "chosen": ["i"], "rejected": ["j", "k", "l"], "num_correct": 1, "subset": "Focus"},
    {"id": "ref:7", "prompt": "t", "chosen": ["t1"], "rejected": ["t2", "t3"], "num_correct": 1, "subset": "Ties"},
    {"id": "tied:7", "prompt": "t", "chosen": ["t1", "t4"], "rejected": ["t2", "t3"], "num_correct": 2,
     "subset": "Ties"},
]  # fmt: skip
V2_TABLE = {"a": 3, "b": 1, "c": 2, "d": 0, "e": 1, "f": 2, "g": 0, "h": 0, "i": 2, "j": 2, "k": 0, "l": 1,
            "t1": 6, "t2": 2, "t3": 3, "t4": 5}  # fmt: skip


def test_v2_end_to_end_by_hand():
    """Math: [1, 0] -> 0.5; Focus: i ties j -> 0.5; Ties: ref margin 6-3 = 3, tied margin 5-3 = 2, spread 1: both
    accurate, preferred 1, hard 1, term tanh(min(3, 2)/1 - 1) = tanh(1); final = mean(0.5, 0.5, ties)."""
    out = evaluate_rewardbench(TableScorer(V2_TABLE), V2_ROWS, "v2", bootstrap=50)
    ties = 0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(1.0)
    assert out["subsets"] == pytest.approx({"Math": 0.5, "Focus": 0.5, "Ties": ties})
    assert out["score"] == pytest.approx((0.5 + 0.5 + ties) / 3)
    assert out["ties"]["ref_accuracy"] == 1.0
    low, high = out["score_ci"]
    assert low <= out["score"] <= high


def test_v2_pairwise_scorer_best_of_n_and_round_robin():
    table = {k: float(v) for k, v in V2_TABLE.items()}
    pair = evaluate_rewardbench(PairScorer(table), V2_ROWS, "v2", bootstrap=0)
    point = evaluate_rewardbench(TableScorer(table), V2_ROWS, "v2", bootstrap=0)
    # chosen must beat each rejected: the same decisions as the scores (Focus: P = 0.5 against j is a shared tie)
    assert pair["subsets"]["Math"] == point["subsets"]["Math"] == 0.5
    assert pair["subsets"]["Focus"] == 0.5
    # Ties: each response scored by its mean win probability against the other responses of its row
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    t1 = np.mean([sig(6 - 2), sig(6 - 3)])
    assert pair["per_row_scores"][3][0] == pytest.approx(t1)
    assert pair["ties"]["ref_accuracy"] == 1.0 and pair["ties"]["tied_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("rows", "reader", "match"),
    [
        ([{"prompt": "p", "chosen": "a", "subset": "shp"}], v1_rows, 'row 0: field "rejected"'),
        ([{"chosen": "a", "rejected": "b", "subset": "shp"}], v1_rows, 'row 0: field "prompt"'),
        ([{"prompt": "p", "chosen": 3, "rejected": "b", "subset": "shp"}], v1_rows, 'row 0: field "chosen"'),
        ([{"prompt": "p", "chosen": "a", "rejected": ["b"], "subset": "Math"}], v2_rows, 'row 0: field "chosen"'),
        ([{"prompt": "p", "chosen": ["a"], "rejected": ["b"], "num_correct": 2, "subset": "Math"}], v2_rows,
         'row 0: field "num_correct"'),
        ([{"id": 4, "prompt": "p", "chosen": ["a"], "rejected": ["b"], "subset": "Ties"}], v2_rows,
         'row 0: field "id"'),
    ],
)  # fmt: skip
def test_bad_rows_name_the_row_and_field(rows, reader, match):
    with pytest.raises(ValueError, match=match):
        reader(rows)


def test_format_input_chat_and_text():
    assert format_input("q", "a", True, DEFAULT_PROMPT_TEMPLATE) == (
        [{"role": "user", "content": "q"}],
        [{"role": "assistant", "content": "a"}],
    )
    assert format_input("q", "a", False, "Q: {prompt}\nA:") == ("Q: q\nA:", "a")
    with pytest.raises(ValueError, match="version"):
        evaluate_rewardbench(TableScorer({}), V1_ROWS, "v3")
    with pytest.raises(ValueError, match="bootstrap"):
        evaluate_rewardbench(TableScorer(V1_TABLE), V1_ROWS, "v1", bootstrap=-1)


def test_cli_protocols_equal_python_on_a_tiny_model(tmp_path):
    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.modeling import load_reward_model
    from trl_rewards.scripts.cli import main
    from trl_rewards.testing import save_tiny, tiny_llama_reward_model

    model, tok = tiny_llama_reward_model()
    model_dir = save_tiny(model, tok, tmp_path / "tiny")
    for protocol, rows in (("rewardbench", V1_ROWS), ("rewardbench2", V2_ROWS)):
        data = tmp_path / f"{protocol}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / protocol
        argv = f"eval --model {model_dir} --dataset {data} --output_dir {out} --protocol {protocol} --bootstrap 20"
        assert main(argv.split()) == 0
        results = json.loads((out / "results.json").read_text())
        assert "Score:" in (out / "report.md").read_text()
        loaded, tokenizer = load_reward_model(model_dir)
        version = "v1" if protocol == "rewardbench" else "v2"
        expected = evaluate_rewardbench(RewardScorer(loaded, tokenizer), rows, version, bootstrap=20)
        assert results["score"] == pytest.approx(expected["score"], abs=1e-9)
        assert results["config"]["protocol"] == protocol
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "subset": "shp"}) + "\n")
    with pytest.raises(ValueError, match='row 0: field "rejected"'):
        main(f"eval --model {model_dir} --dataset {bad} --output_dir {tmp_path / 'x'} --protocol rewardbench".split())


def test_cli_runs_attribute_and_pairwise_models(tmp_path):
    """All three model kinds go through the protocol: an attribute model (found by its stored attribute names,
    combined by its stored weights) and a pair-PM (named with --model_kind pairwise) equal their Python scorers."""
    from trl_rewards.inference.attribute_scoring import AttributeScorer
    from trl_rewards.inference.pairwise_scoring import PairwiseScorer
    from trl_rewards.scripts.cli import main
    from trl_rewards.testing import save_tiny, tiny_llama_reward_model

    data = tmp_path / "v1.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in V1_ROWS))
    model, tok = tiny_llama_reward_model(num_labels=2)
    model.config.attribute_names = ["helpfulness", "verbosity"]
    model.config.attribute_weights = [1.0, -0.5]
    model.config.problem_type = "regression"
    attr_dir = save_tiny(model, tok, tmp_path / "attr")
    pair_model, pair_tok = tiny_llama_reward_model(seed=3)
    pair_dir = save_tiny(pair_model, pair_tok, tmp_path / "pair")
    for name, folder, extra, scorer in (
        ("attr", attr_dir, [], lambda: AttributeScorer.from_pretrained(attr_dir)),
        ("pair", pair_dir, ["--model_kind", "pairwise"], lambda: PairwiseScorer.from_pretrained(pair_dir)),
    ):
        out = tmp_path / f"out_{name}"
        argv = f"eval --model {folder} --dataset {data} --output_dir {out} --protocol rewardbench --bootstrap 0"
        assert main(argv.split() + extra) == 0
        results = json.loads((out / "results.json").read_text())
        expected = evaluate_rewardbench(scorer(), V1_ROWS, "v1", bootstrap=0)
        assert results["scorer_kind"] == expected["scorer_kind"] == ("pairwise" if name == "pair" else "pointwise")
        assert results["per_row"] == expected["per_row"] and results["score"] == pytest.approx(expected["score"])
    with pytest.raises(ValueError, match="pair-PM"):
        main(f"eval --model {pair_dir} --dataset {data} --output_dir {tmp_path / 'p'} --model_kind pairwise".split())

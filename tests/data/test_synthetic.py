import math
import random
import re
from collections import Counter

import pytest

from trl_rewards.data.synthetic import (
    CORRUPTION_KINDS,
    MAX_VALUE,
    STEP_SEPARATOR,
    ArithmeticProblem,
    build_synthetic_datasets,
    corrupt_problem,
    extract_answer,
    generate_problems,
)

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (-?\d+)")


def parse_equation(step: str) -> tuple[int, str, int, int]:
    """The single `a op b = c` of an arithmetic step."""
    matches = EQUATION.findall(step)
    assert len(matches) == 1, step
    a, op, b, c = matches[0]
    return int(a), op, int(b), int(c)


def evaluate(a: int, op: str, b: int) -> int | None:
    if op == "/":
        return a // b if b and a % b == 0 else None
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def equation_holds(step: str) -> bool:
    a, op, b, c = parse_equation(step)
    return evaluate(a, op, b) == c


@pytest.fixture(scope="module")
def problems() -> list[ArithmeticProblem]:
    return generate_problems(300, seed=0)


@pytest.fixture(scope="module")
def corruptions(problems):
    rng = random.Random(0)
    return [corrupt_problem(problem, rng) for problem in problems]


@pytest.fixture(scope="module")
def datasets():
    return build_synthetic_datasets(n_train=60, n_test=20, seed=0)


def test_first_problem_of_seed_0_is_pinned():
    # Pins the generator: random.Random's choice/randint/shuffle are stable across Python versions.
    problem = generate_problems(1, seed=0)[0]
    assert problem.prompt == (
        "Liam has 21 apples. He buys 5 jars with 6 apples each, then splits them into 3 equal piles and keeps one. "
        "How many apples does he have now?"
    )
    assert problem.start == 21
    assert problem.steps == [
        "5 jars with 6 apples each is 5 * 6 = 30.",
        "Adding them gives 21 + 30 = 51.",
        "One of 3 equal piles is 51 / 3 = 17.",
        "The answer is 17.",
    ]
    assert problem.answer == 17
    assert problem.solution == STEP_SEPARATOR.join(problem.steps)


def test_generation_is_deterministic_and_seed_dependent():
    state = random.getstate()
    assert generate_problems(50, seed=3) == generate_problems(50, seed=3)
    assert random.getstate() == state  # the global RNG is never used
    assert [p.prompt for p in generate_problems(50, seed=3)] != [p.prompt for p in generate_problems(50, seed=4)]


def test_build_is_deterministic_and_seed_dependent(datasets):
    again = build_synthetic_datasets(n_train=60, n_test=20, seed=0)
    other = build_synthetic_datasets(n_train=60, n_test=20, seed=1)
    for name in datasets:
        assert datasets[name].to_list() == again[name].to_list(), name
        assert datasets[name].to_list() != other[name].to_list(), name


def test_prompts_are_unique(problems):
    assert len({problem.prompt for problem in problems}) == 300


@pytest.mark.parametrize("min_steps, max_steps", [(2, 4), (1, 1), (3, 3), (4, 4)])
def test_number_of_steps_is_within_bounds(min_steps, max_steps):
    counts = Counter(
        len(p.operations) for p in generate_problems(100, seed=1, min_steps=min_steps, max_steps=max_steps)
    )
    assert set(counts) == set(range(min_steps, max_steps + 1))


def test_correct_steps_recompute_exactly(problems):
    for problem in problems:
        *arithmetic, final = problem.steps
        values = [problem.start]
        for step, operation in zip(arithmetic, problem.operations, strict=True):
            a, op, b, c = parse_equation(step)
            assert evaluate(a, op, b) == c, step
            assert 1 <= c <= MAX_VALUE
            assert (a, op, b, c) == (operation.left, operation.op, operation.right, operation.result)
            values.append(c)
        assert c == problem.answer
        assert final == f"The answer is {problem.answer}."
        assert extract_answer(problem.solution) == problem.answer
        assert min(values) >= 1 and problem.answer <= MAX_VALUE
        assert str(problem.start) in problem.prompt


def numbers_in(text: str) -> set[int]:
    return {int(number) for number in re.findall(r"\d+", text)}


def test_corruptions_are_single_errors_that_change_the_answer(problems, corruptions):
    for problem, wrong in zip(problems, corruptions, strict=True):
        assert wrong.kind in CORRUPTION_KINDS
        assert wrong.answer != problem.answer
        assert extract_answer(wrong.solution) == wrong.answer
        steps, correct = wrong.steps, problem.steps
        assert len(steps) == len(correct)
        index = wrong.first_error_step
        assert 0 <= index < len(problem.operations)
        assert steps[:index] == correct[:index]
        assert steps[index] != correct[index]
        assert steps[-1] == f"The answer is {wrong.answer}."
        # Later steps propagate the wrong value consistently: only a slip writes a false equation, and only once.
        holds = [equation_holds(step) for step in steps[:-1]]
        expected = [True] * len(holds)
        if wrong.kind == "arithmetic_slip":
            expected[index] = False
        assert holds == expected, steps
        assert wrong.step_labels == [i < index for i in range(len(steps))]


def test_each_corrupted_step_is_wrong_the_way_its_kind_says(problems, corruptions):
    seen = Counter()
    for problem, wrong in zip(problems, corruptions, strict=True):
        index = wrong.first_error_step
        a, op, b, c = parse_equation(wrong.steps[index])
        gold = problem.operations[index]
        before = numbers_in(problem.prompt) | numbers_in(STEP_SEPARATOR.join(problem.steps[:index]))
        if wrong.kind == "arithmetic_slip":  # right operands and operator, result off by 1 to 3
            assert (a, op, b) == (gold.left, gold.op, gold.right)
            assert 1 <= abs(c - gold.result) <= 3
        elif wrong.kind == "wrong_operation":  # the sentence's words are kept, the operator changes
            assert (a, b) == (gold.left, gold.right) and op != gold.op
            assert wrong.steps[index].split(" = ")[0].rsplit(f" {op} ", 1)[0] in problem.steps[index]
        else:  # one operand changed into a number that appears nowhere in the problem or the steps before
            changed = [side for side, new, old in (("left", a, gold.left), ("right", b, gold.right)) if new != old]
            assert len(changed) == 1 and op == gold.op, wrong.steps[index]
            new, old = (a, gold.left) if changed == ["left"] else (b, gold.right)
            assert new not in before, (wrong.steps[index], problem.prompt)
            source = getattr(gold, f"{changed[0]}_from")
            if wrong.kind == "copied_number":  # the original is a number written in the problem
                assert source is None and old in numbers_in(problem.prompt)
            else:  # carried_result: the original is the result of an earlier step, shown there
                assert source is not None and old == problem.operations[source].result
                assert f"= {old}." in problem.steps[source]
        seen[wrong.kind] += 1
    assert set(seen) == set(CORRUPTION_KINDS)


def test_all_corruption_kinds_occur_in_similar_numbers(corruptions):
    # The kind is drawn uniformly; a kind that cannot keep the wrong answer within a factor 2 of the gold one (or
    # cannot apply: a problem whose every carried value divides exactly only as it is) passes its turn to the next.
    counts = Counter(wrong.kind for wrong in corruptions)
    assert counts == {"carried_result": 85, "copied_number": 81, "arithmetic_slip": 74, "wrong_operation": 60}


def test_wrong_answers_are_within_a_factor_2_of_the_gold_ones(problems, corruptions):
    for problem, wrong in zip(problems, corruptions, strict=True):
        assert problem.answer / 2 <= wrong.answer <= 2 * problem.answer


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_corruption_kinds_can_be_restricted(kind):
    datasets = build_synthetic_datasets(n_train=300, n_test=100, seed=0, corruption_kinds=[kind])
    assert (len(datasets["preference_train"]), len(datasets["preference_test"])) == (300, 100)
    assert set(datasets["preference_train"]["error_type"]) == {kind}
    problems = generate_problems(50, seed=0)
    rng = random.Random(0)
    kinds = set()
    for problem in problems:
        try:
            kinds.add(corrupt_problem(problem, rng, [kind]).kind)
        except RuntimeError:
            assert kind == "carried_result"  # e.g. 37 + 29 = 66 then 66 / 6: no near miss of 66 divides by 6
    assert kinds == {kind}


def test_a_problem_that_no_carried_result_can_corrupt_is_replaced():
    problems = generate_problems(400, seed=0)
    rng = random.Random(0)
    stuck = []
    for problem in problems:
        try:
            corrupt_problem(problem, rng, ["carried_result"])
        except RuntimeError as e:
            assert "carried_result" in str(e)
            stuck.append(problem.prompt + STEP_SEPARATOR)
    assert stuck
    datasets = build_synthetic_datasets(n_train=300, n_test=50, seed=0, corruption_kinds=["carried_result"])
    assert not set(stuck) & set(datasets["prompts_train"]["prompt"])


def test_corrupted_solutions_have_the_token_length_of_the_correct_ones(minilm_path):
    """Every number is a single MiniLM token, and an error changes numbers or an operator: lengths match exactly."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    assert all(len(tokenizer(str(n), add_special_tokens=False)["input_ids"]) == 1 for n in range(MAX_VALUE + 1))
    rows = build_synthetic_datasets(n_train=200, n_test=1, seed=0)["preference_train"]
    for row in rows:
        chosen, rejected = (tokenizer(row["prompt"] + row[key])["input_ids"] for key in ("chosen", "rejected"))
        assert len(chosen) == len(rejected)
        assert len(row["chosen"].split()) == len(row["rejected"].split())


def test_no_surface_feature_separates_correct_from_corrupted_solutions():
    """
    A logistic regression on surface features of a solution (its numbers' size and spread, the final answer, its
    digits, its length in characters, its operators) stays near chance on held-out problems: the label is in the
    arithmetic, not in which template wrote the text or how big its numbers are.
    """
    import torch

    data = build_synthetic_datasets(n_train=1200, n_test=400, seed=0)

    def features(split):
        rows, labels = [], []
        for row in data[f"outcome_{split}"]:
            text = row["completion"]
            numbers = [float(n) for n in re.findall(r"\d+", text)]
            answer = float(extract_answer(text))
            rows.append(
                [
                    answer / MAX_VALUE,
                    math.log(answer),
                    answer % 2,
                    answer % 5 == 0,
                    answer % 10 == 0,
                    max(numbers) / MAX_VALUE,
                    sum(numbers) / len(numbers) / MAX_VALUE,
                    len(set(numbers)) / len(numbers),
                    len(text) / 200,
                    sum(ch.isdigit() for ch in text) / 50,
                    *(text.count(f" {op} ") for op in "+-*/"),
                    answer / max(numbers[:-1]),
                ]
            )
            labels.append(float(row["label"]))
        return torch.tensor(rows, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)

    x, y = features("train")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    weights = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200)

    def closure():
        optimizer.zero_grad()
        logits = ((x - mean) / std) @ weights[:-1] + weights[-1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + 1e-3 * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    x_test, y_test = features("test")
    with torch.no_grad():
        predicted = (((x_test - mean) / std) @ weights[:-1] + weights[-1]) > 0
    accuracy = (predicted == y_test.bool()).double().mean().item()
    assert accuracy < 0.6, accuracy


def test_corrupt_problem_rejects_unknown_kinds(problems):
    rng = random.Random(0)
    with pytest.raises(ValueError, match="kinds"):
        corrupt_problem(problems[0], rng, ["typo"])
    with pytest.raises(ValueError, match="kinds"):
        corrupt_problem(problems[0], rng, [])


def test_default_split_sizes():
    datasets = build_synthetic_datasets()
    assert {name: len(dataset) for name, dataset in datasets.items()} == {
        "preference_train": 600,
        "outcome_train": 1200,
        "stepwise_train": 1200,
        "prompts_train": 600,
        "preference_test": 200,
        "outcome_test": 400,
        "stepwise_test": 400,
        "prompts_test": 200,
    }


def test_columns(datasets):
    for split in ("train", "test"):
        assert datasets[f"preference_{split}"].column_names == ["prompt", "chosen", "rejected", "error_type"]
        assert datasets[f"outcome_{split}"].column_names == ["prompt", "completion", "label", "error_type"]
        assert datasets[f"stepwise_{split}"].column_names == ["prompt", "completions", "labels", "error_type"]
        assert datasets[f"prompts_{split}"].column_names == ["prompt", "answer"]


def test_train_and_test_problems_are_disjoint(datasets):
    for kind in ("preference", "outcome", "stepwise", "prompts"):
        train, test = set(datasets[f"{kind}_train"]["prompt"]), set(datasets[f"{kind}_test"]["prompt"])
        assert (len(train), len(test)) == (60, 20)
        assert not train & test, kind


def test_views_agree_with_each_other(datasets):
    for split in ("train", "test"):
        preference = datasets[f"preference_{split}"].to_list()
        outcome = datasets[f"outcome_{split}"].to_list()
        stepwise = datasets[f"stepwise_{split}"].to_list()
        prompts = datasets[f"prompts_{split}"].to_list()
        for i, pair in enumerate(preference):
            prompt = pair["prompt"]
            assert prompt.endswith("?" + STEP_SEPARATOR)
            kind = pair["error_type"]
            assert kind in CORRUPTION_KINDS
            assert outcome[2 * i] == {
                "prompt": prompt,
                "completion": pair["chosen"],
                "label": True,
                "error_type": "none",
            }
            assert outcome[2 * i + 1] == {
                "prompt": prompt,
                "completion": pair["rejected"],
                "label": False,
                "error_type": kind,
            }
            assert (stepwise[2 * i]["error_type"], stepwise[2 * i + 1]["error_type"]) == ("none", kind)
            assert STEP_SEPARATOR.join(stepwise[2 * i]["completions"]) == pair["chosen"]
            assert STEP_SEPARATOR.join(stepwise[2 * i + 1]["completions"]) == pair["rejected"]
            assert prompts[i] == {"prompt": prompt, "answer": extract_answer(pair["chosen"])}
            assert extract_answer(pair["rejected"]) != prompts[i]["answer"]


def test_labels_are_balanced_and_stepwise_labels_follow_the_first_error(datasets):
    outcome = datasets["outcome_train"]["label"]
    assert Counter(outcome) == {True: 60, False: 60}
    for row_index, row in enumerate(datasets["stepwise_train"]):
        labels = row["labels"]
        assert len(labels) == len(row["completions"])
        if row_index % 2 == 0:
            assert all(labels)
        else:
            first_error = labels.index(False)
            assert labels == [True] * first_error + [False] * (len(labels) - first_error)
            assert labels[-1] is False


def test_texts_are_short(datasets):
    for row in datasets["preference_train"]:
        assert max(len(row[key].split()) for key in ("prompt", "chosen", "rejected")) < 80


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 19.", 19),
        ("3 * 4 = 12.\nThe answer is 19.", 19),
        ("The answer is 19.  \n\n", 19),
        ("The answer is 19. I am confident.", 19),
        ("the answer is 7", 7),
        ("The answer is -4.", -4),
        ("The answer is 0.", 0),
        ("The answer is 12.\nWait, no. The answer is 15.", 15),
        ("The answer is 1,250.", 1250),
        ("The answer is **42**.", 42),
        ("The answer is $8.", 8),
        ("The answer is 19, as computed.", 19),
        ("The answer is 3.5.", None),
        ("The answer is unknown.", None),
        ("3 * 4 = 12.", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": -1}, "n must be"),
        ({"n": 5, "min_steps": 0}, "min_steps"),
        ({"n": 5, "min_steps": 3, "max_steps": 2}, "min_steps"),
    ],
)
def test_generate_problems_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_problems(**kwargs)


def test_build_rejects_empty_splits():
    with pytest.raises(ValueError, match="n_test"):
        build_synthetic_datasets(n_train=10, n_test=0)

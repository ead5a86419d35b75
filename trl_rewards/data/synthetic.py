"""Verifiable synthetic data: multi-step arithmetic word problems with worked solutions and corrupted variants.

The demo must run offline, so it builds its data here instead of downloading it. Every problem is a short word
problem whose solution is a chain of steps of the form `"... a op b = c."`, followed by `"The answer is N."`; the
correctness of every step is known exactly. Each problem also gets one corrupted solution with a single injected
error, chosen by a seeded RNG among:

- `"arithmetic_slip"`: one step states a wrong result (off by 1 to 3);
- `"wrong_operation"`: one step applies the wrong operator (e.g. `+` where the problem says "gives away");
- `"wrong_number"`: one step miscopies an operand (another number of the problem, an earlier result, or a near miss
  such as 13 for 12).

Later steps consistently compute on the wrong value, so the first wrong step is *the* error, and the corrupted final
answer always differs from the gold one.

Step labels follow the usual process-reward-model convention: every step from the first error on is labelled
`False`, the final `"The answer is N."` included, even a later step whose own arithmetic is right, because it builds
on a wrong value (or, for an independent sub-computation, belongs to a solution that can no longer reach the answer).

Text conventions: steps are joined with [`STEP_SEPARATOR`] (`"\\n"`) in the text forms, and every dataset `prompt`
ends with it, so that `prompt + completion` (what TRL's reward trainer and [`encode_pair_texts`] feed the model) puts
the question and each step on their own lines. [`build_synthetic_datasets`] derives, from one list of problems split
into disjoint train and test problems, a preference, an outcome, a stepwise and an RL-prompt view of each split.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from datasets import Dataset, DatasetDict

STEP_SEPARATOR = "\n"
ANSWER_TEMPLATE = "The answer is {answer}."
CORRUPTION_KINDS = ("arithmetic_slip", "wrong_operation", "wrong_number")
OPERATORS = ("+", "-", "*", "/")
MAX_VALUE = 999  # every value, gold or corrupted, stays in [1, MAX_VALUE]

_NAMES = tuple((name, "she") for name in ("Mia", "Ava", "Zoe", "Sara", "Nina", "Emma")) + tuple(
    (name, "he") for name in ("Liam", "Noah", "Omar", "Leo", "Ravi", "Kenji")
)
_OBJECTS = ("apples", "marbles", "stickers", "cards", "coins", "pencils", "books", "shells", "stamps", "cookies")
_CONTAINERS = ("bags", "boxes", "packs", "jars")
# (clause in the prompt, step sentence); the step sentence keeps {a} {op} {b} {c} to be rendered with its values.
_ADD = (
    ("finds {n} more", "Finding {b} more gives {a} {op} {b} = {c}."),
    ("buys {n} more", "Buying {b} more gives {a} {op} {b} = {c}."),
    ("gets {n} more from a friend", "Getting {b} more gives {a} {op} {b} = {c}."),
)
_SUB = (
    ("gives away {n}", "Giving away {b} leaves {a} {op} {b} = {c}."),
    ("loses {n}", "Losing {b} leaves {a} {op} {b} = {c}."),
    ("sells {n}", "Selling {b} leaves {a} {op} {b} = {c}."),
)
_MUL = (
    ("doubles them", 2, "Doubling gives {a} {op} {b} = {c}."),
    ("triples them", 3, "Tripling gives {a} {op} {b} = {c}."),
)
_DIV = ("splits them into {n} equal piles and keeps one", "One of {b} equal piles is {a} {op} {b} = {c}.")
_GROUP_CLAUSE = "buys {k} {box} with {m} {obj} each"
_GROUP_STEPS = (
    "{{a}} {box} with {{b}} {obj} each is {{a}} {{op}} {{b}} = {{c}}.",
    "Adding them gives {a} {op} {b} = {c}.",
)
_ANSWER_PATTERN = re.compile(r"the answer is\s*[*$]*\s*(-?\d+(?:,\d{3})*)(?![.,]?\d)", re.IGNORECASE)


@dataclass(frozen=True)
class Operation:
    """
    One step of a solution: `left op right = result`, rendered into a sentence by `template`.

    Parameters:
        op (`str`): one of `"+"`, `"-"`, `"*"`, `"/"` (exact integer division).
        left (`int`): left operand as shown in the step.
        right (`int`): right operand as shown in the step.
        result (`int`): result as shown in the step (wrong for an arithmetic slip).
        template (`str`): sentence with `{a}`, `{op}`, `{b}`, `{c}` placeholders.
        left_from (`int` or `None`): index of the earlier step whose result is the left operand, `None` for a number
            of the problem.
        right_from (`int` or `None`): same for the right operand.
    """

    op: str
    left: int
    right: int
    result: int
    template: str
    left_from: int | None = None
    right_from: int | None = None

    @property
    def text(self) -> str:
        return self.template.format(a=self.left, op=self.op, b=self.right, c=self.result)


def _render_steps(operations: Sequence[Operation], answer: int) -> list[str]:
    return [operation.text for operation in operations] + [ANSWER_TEMPLATE.format(answer=answer)]


@dataclass(frozen=True)
class ArithmeticProblem:
    """
    A word problem with its correct worked solution.

    Parameters:
        prompt (`str`): the question, e.g. `"Mia has 12 apples. She buys 3 bags with 4 apples each, then gives away
            5. How many apples does she have now?"` (without the trailing [`STEP_SEPARATOR`] the datasets add).
        start (`int`): the quantity the problem starts from (`12` above).
        operations (`tuple[Operation, ...]`): the arithmetic steps, in order; the last one's result is the answer.
        answer (`int`): the gold answer.
    """

    prompt: str
    start: int
    operations: tuple[Operation, ...]
    answer: int

    @property
    def steps(self) -> list[str]:
        """The correct steps: one sentence per operation, then `"The answer is N."`."""
        return _render_steps(self.operations, self.answer)

    @property
    def solution(self) -> str:
        return STEP_SEPARATOR.join(self.steps)


@dataclass(frozen=True)
class CorruptedSolution:
    """
    A solution of an [`ArithmeticProblem`] with one injected error.

    Parameters:
        kind (`str`): one of [`CORRUPTION_KINDS`].
        first_error_step (`int`): 0-based index, into `steps`, of the first wrong step; every step before it equals
            the correct one.
        operations (`tuple[Operation, ...]`): the steps as written, later steps computed on the wrong value.
        answer (`int`): the (wrong) final answer, never the gold one.
    """

    kind: str
    first_error_step: int
    operations: tuple[Operation, ...]
    answer: int

    @property
    def steps(self) -> list[str]:
        return _render_steps(self.operations, self.answer)

    @property
    def solution(self) -> str:
        return STEP_SEPARATOR.join(self.steps)

    @property
    def step_labels(self) -> list[bool]:
        """`True` before `first_error_step`, `False` from it on (the final answer step included)."""
        return [i < self.first_error_step for i in range(len(self.operations) + 1)]


def extract_answer(text: str) -> int | None:
    """
    Parses the final answer of a solution: the integer of the last `"The answer is N"` (case-insensitive).

    Trailing text and whitespace, a leading `$`, markdown bold and thousands separators (`1,000`) are tolerated; a
    non-integer (`"The answer is 3.5"`) or a text without the phrase gives `None`.
    """
    matches = list(_ANSWER_PATTERN.finditer(text))
    if not matches:
        return None
    return int(matches[-1].group(1).replace(",", ""))


def _apply(op: str, a: int, b: int) -> int | None:
    """`a op b`, or `None` when it leaves the integers in `[1, MAX_VALUE]` (negative, inexact division, too big)."""
    if op == "+":
        value = a + b
    elif op == "-":
        value = a - b
    elif op == "*":
        value = a * b
    else:
        if b == 0 or a % b:
            return None
        value = a // b
    return value if 1 <= value <= MAX_VALUE else None


def _generate_problem(rng: random.Random, num_steps: int) -> ArithmeticProblem:
    name, pronoun = rng.choice(_NAMES)
    obj = rng.choice(_OBJECTS)
    start = value = rng.randint(5, 40)
    chain: int | None = None  # index of the step holding the running total; None while it is the start number
    operations: list[Operation] = []
    clauses: list[str] = []

    def push(op: str, left: int, right: int, template: str, left_from=None, right_from=None) -> int:
        result = _apply(op, left, right)
        operations.append(Operation(op, left, right, result, template, left_from, right_from))
        return result

    while len(operations) < num_steps:
        kinds = ["mul"]
        if value <= MAX_VALUE - 2:
            kinds.append("add")
        if value >= 4:
            kinds.append("sub")
        if num_steps - len(operations) >= 2:
            kinds += ["group", "group"]  # the two-step clause makes the most interesting chains; weight it up
        divisors = [k for k in range(2, 7) if value % k == 0 and value // k >= 2]
        if divisors:
            kinds.append("div")
        kind = rng.choice(kinds)
        if kind == "add":
            clause, template = rng.choice(_ADD)
            n = rng.randint(2, min(30, MAX_VALUE - value))
            new = push("+", value, n, template, chain)
        elif kind == "sub":
            clause, template = rng.choice(_SUB)
            n = rng.randint(2, min(value - 1, 40))
            new = push("-", value, n, template, chain)
        elif kind == "mul":
            clause, n, template = rng.choice(_MUL)
            if value * n > MAX_VALUE:
                continue
            new = push("*", value, n, template, chain)
        elif kind == "div":
            clause, template = _DIV
            n = rng.choice(divisors)
            new = push("/", value, n, template, chain)
        else:
            box = rng.choice(_CONTAINERS)
            k, m = rng.randint(2, 6), rng.randint(2, 12)
            if value + k * m > MAX_VALUE:
                continue
            clause = _GROUP_CLAUSE.format(k=k, m=m, box=box, obj=obj)
            product = push("*", k, m, _GROUP_STEPS[0].format(box=box, obj=obj))
            new = push("+", value, product, _GROUP_STEPS[1], chain, len(operations) - 1)
            n = None
        clauses.append(clause.format(n=n) if n is not None else clause)
        value, chain = new, len(operations) - 1

    prompt = (
        f"{name} has {start} {obj}. {pronoun.capitalize()} {', then '.join(clauses)}. "
        f"How many {obj} does {pronoun} have now?"
    )
    return ArithmeticProblem(prompt=prompt, start=start, operations=tuple(operations), answer=value)


def generate_problems(n: int, seed: int = 0, min_steps: int = 2, max_steps: int = 4) -> list[ArithmeticProblem]:
    """
    Generates `n` word problems with distinct prompts, deterministically from `seed`.

    Args:
        n (`int`): number of problems.
        seed (`int`, *optional*, defaults to `0`): seed of the private `random.Random` (the global RNG is untouched).
        min_steps (`int`, *optional*, defaults to `2`): fewest arithmetic steps (the final answer step not counted).
        max_steps (`int`, *optional*, defaults to `4`): most arithmetic steps.

    Returns:
        `list[ArithmeticProblem]`: problems whose values are integers in `[1, 999]`, divisions exact.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    rng = random.Random(seed)
    problems, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(problems) == n:
            break
        problem = _generate_problem(rng, rng.randint(min_steps, max_steps))
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
    if len(problems) < n:
        raise ValueError(f"could only generate {len(problems)} distinct problems out of the {n} asked")
    return problems


def _replay(
    operations: Sequence[Operation], index: int, *, op=None, left=None, right=None, slip: int = 0
) -> tuple[Operation, ...] | None:
    """Recomputes the chain with one change at step `index`; `None` if any value leaves `[1, MAX_VALUE]`."""
    results: list[int] = []
    replayed = []
    for i, operation in enumerate(operations):
        a = operation.left if operation.left_from is None else results[operation.left_from]
        b = operation.right if operation.right_from is None else results[operation.right_from]
        symbol = operation.op
        if i == index:
            symbol, a, b = op or symbol, a if left is None else left, b if right is None else right
        result = _apply(symbol, a, b)
        if result is None:
            return None
        if i == index and slip:
            result += slip
            if not 1 <= result <= MAX_VALUE:
                return None
        results.append(result)
        replayed.append(replace(operation, op=symbol, left=a, right=b, result=result))
    return tuple(replayed)


def _candidates(problem: ArithmeticProblem, kind: str, index: int) -> list[dict]:
    operation = problem.operations[index]
    if kind == "arithmetic_slip":
        return [{"slip": delta} for delta in (-3, -2, -1, 1, 2, 3)]
    if kind == "wrong_operation":
        return [{"op": op} for op in OPERATORS if op != operation.op]
    # wrong_number: an operand miscopied as another number of the problem or an earlier result (or the start number,
    # for the running total), or as a near miss of itself (off by 1, 2 or 10)
    numbers = {int(number) for number in re.findall(r"\d+", problem.prompt)}
    earlier = {problem.start} | {previous.result for previous in problem.operations[:index]}
    candidates = []
    for side, source in (("left", operation.left_from), ("right", operation.right_from)):
        shown = getattr(operation, side)
        pool = (numbers if source is None else earlier) | {shown + delta for delta in (-10, -2, -1, 1, 2, 10)}
        candidates += [{side: number} for number in sorted(pool) if number != shown and number >= 1]
    return candidates


def _check_kinds(kinds: Sequence[str]) -> None:
    if not kinds or set(kinds) - set(CORRUPTION_KINDS):
        raise ValueError(f"kinds must be a non-empty subset of {list(CORRUPTION_KINDS)}, got {list(kinds)}")


def _corrupt(problem: ArithmeticProblem, rng: random.Random, kinds: Sequence[str]) -> CorruptedSolution | None:
    kinds = list(dict.fromkeys(kinds))
    rng.shuffle(kinds)
    fallback = None
    for kind in kinds:
        indices = list(range(len(problem.operations)))
        rng.shuffle(indices)
        for index in indices:
            candidates = _candidates(problem, kind, index)
            rng.shuffle(candidates)
            for change in candidates:
                operations = _replay(problem.operations, index, **change)
                if operations is None or operations[-1].result == problem.answer:
                    continue
                wrong = CorruptedSolution(kind, index, operations, operations[-1].result)
                # Prefer a wrong answer within a factor 2 of the gold one, so that its size alone does not give it away
                if problem.answer / 2 <= wrong.answer <= 2 * problem.answer:
                    return wrong
                fallback = fallback or wrong
    return fallback


def corrupt_problem(
    problem: ArithmeticProblem, rng: random.Random, kinds: Sequence[str] = CORRUPTION_KINDS
) -> CorruptedSolution:
    """
    Injects one error into the solution of `problem`, the kind, step and change drawn from `rng`.

    Args:
        problem ([`ArithmeticProblem`]): the problem to corrupt.
        rng (`random.Random`): source of every random choice.
        kinds (`Sequence[str]`, *optional*, defaults to [`CORRUPTION_KINDS`]): the kinds to draw from.

    Returns:
        [`CorruptedSolution`]: a solution whose first `first_error_step` steps are correct, whose later steps compute
        consistently on the wrong value, and whose final answer differs from `problem.answer`, within a factor 2 of
        it whenever `kinds` allow.

    Raises:
        `RuntimeError`: when no corruption of `kinds` changes the answer (impossible with the default kinds, rare
            with a single kind).
    """
    _check_kinds(kinds)
    wrong = _corrupt(problem, rng, kinds)
    if wrong is None:
        raise RuntimeError(f"no corruption of kinds {list(kinds)} changes the answer of: {problem.prompt}")
    return wrong


def build_synthetic_datasets(
    n_train: int = 600,
    n_test: int = 200,
    seed: int = 0,
    min_steps: int = 2,
    max_steps: int = 4,
    corruption_kinds: Sequence[str] = CORRUPTION_KINDS,
) -> DatasetDict:
    """
    Builds every training format from one set of problems, split by problem into disjoint train and test sets.

    Each problem yields one correct and one corrupted solution, so preference pairs are one per problem and outcome
    and stepwise labels are exactly balanced between correct and corrupted solutions. Every `prompt` is the question
    followed by [`STEP_SEPARATOR`]; completions are steps joined with it.

    Args:
        n_train (`int`, *optional*, defaults to `600`): number of training problems.
        n_test (`int`, *optional*, defaults to `200`): number of test problems.
        seed (`int`, *optional*, defaults to `0`): seed of the problems and of their corruptions.
        min_steps (`int`, *optional*, defaults to `2`): fewest arithmetic steps per problem.
        max_steps (`int`, *optional*, defaults to `4`): most arithmetic steps per problem.
        corruption_kinds (`Sequence[str]`, *optional*, defaults to [`CORRUPTION_KINDS`]): the kinds of error to
            inject (e.g. only `("wrong_operation",)` for an easier task).

    Returns:
        [`~datasets.DatasetDict`]: with, for `split` in `"train"`, `"test"`:

        - `"preference_{split}"`: `{"prompt": str, "chosen": str, "rejected": str}`, one row per problem;
        - `"outcome_{split}"`: `{"prompt": str, "completion": str, "label": bool}`, the correct solution (`True`)
          then the corrupted one (`False`) of each problem;
        - `"stepwise_{split}"`: `{"prompt": str, "completions": list[str], "labels": list[bool]}`, the same two
          solutions as steps, labelled as the module docstring says;
        - `"prompts_{split}"`: `{"prompt": str, "answer": int}`, one row per problem, for RL with a rule-based
          reward (compare [`extract_answer`] of a completion with `answer`).
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got n_train={n_train}, n_test={n_test}")
    _check_kinds(corruption_kinds)
    total = n_train + n_test
    # Spare problems replace the (rare) ones that a restricted `corruption_kinds` cannot corrupt; with the default
    # kinds an arithmetic slip always applies and none is skipped.
    pool = generate_problems(total + max(10, total // 10), seed=seed, min_steps=min_steps, max_steps=max_steps)
    rng = random.Random(f"trl_rewards.synthetic.corruptions:{seed}")
    problems, corrupted = [], []
    for problem in pool:
        if len(problems) == total:
            break
        wrong = _corrupt(problem, rng, corruption_kinds)
        if wrong is not None:
            problems.append(problem)
            corrupted.append(wrong)
    if len(problems) < total:
        raise RuntimeError(f"only {len(problems)} of {total} problems could be corrupted with {corruption_kinds}")
    splits = {"train": slice(0, n_train), "test": slice(n_train, n_train + n_test)}
    datasets = {}
    for split, rows in splits.items():
        pairs = list(zip(problems[rows], corrupted[rows], strict=True))
        preference, outcome, stepwise, prompts = [], [], [], []
        for problem, wrong in pairs:
            prompt = problem.prompt + STEP_SEPARATOR
            preference.append({"prompt": prompt, "chosen": problem.solution, "rejected": wrong.solution})
            outcome.append({"prompt": prompt, "completion": problem.solution, "label": True})
            outcome.append({"prompt": prompt, "completion": wrong.solution, "label": False})
            correct_labels = [True] * len(problem.steps)
            stepwise.append({"prompt": prompt, "completions": problem.steps, "labels": correct_labels})
            stepwise.append({"prompt": prompt, "completions": wrong.steps, "labels": wrong.step_labels})
            prompts.append({"prompt": prompt, "answer": problem.answer})
        datasets[f"preference_{split}"] = Dataset.from_list(preference)
        datasets[f"outcome_{split}"] = Dataset.from_list(outcome)
        datasets[f"stepwise_{split}"] = Dataset.from_list(stepwise)
        datasets[f"prompts_{split}"] = Dataset.from_list(prompts)
    return DatasetDict(datasets)

"""Verifiable arithmetic word problems: generation of the problems and of their correct worked solutions.

Every problem is a short word problem whose solution is a chain of steps of the form `"... a op b = c."`, followed by
`"The answer is N."`; every value is an integer in `[1, MAX_VALUE]` and every division is exact, so the correctness of
each step is known exactly. `MAX_VALUE` is 300 so that every number is a single token of the BERT/MiniLM vocabulary
(which splits many numbers from 342 on): a corrupted solution then has exactly the token length of the correct one.
[`synthetic_errors`] injects errors into these solutions and [`synthetic`] builds the datasets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

STEP_SEPARATOR = "\n"
ANSWER_TEMPLATE = "The answer is {answer}."
OPERATORS = ("+", "-", "*", "/")
MAX_VALUE = 300  # every value, gold or corrupted, stays in [1, MAX_VALUE]

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
# Steps whose right operand is implied by a word ("doubles"), not written as a number in the problem.
IMPLIED_OPERAND_TEMPLATES = frozenset(template for _, _, template in _MUL)
_DIV = ("splits them into {n} equal piles and keeps one", "One of {b} equal piles is {a} {op} {b} = {c}.")
_GROUP_CLAUSE = "buys {k} {box} with {m} {obj} each"
_GROUP_STEPS = (
    "{{a}} {box} with {{b}} {obj} each is {{a}} {{op}} {{b}} = {{c}}.",
    "Adding them gives {a} {op} {b} = {c}.",
)


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


class WorkedSteps:
    """The written solution of a dataclass with `operations` and `answer`: one sentence per operation, then
    `"The answer is N."` (a correct one for [`ArithmeticProblem`], a corrupted one for `CorruptedSolution`)."""

    operations: tuple[Operation, ...]
    answer: int

    @property
    def steps(self) -> list[str]:
        return [operation.text for operation in self.operations] + [ANSWER_TEMPLATE.format(answer=self.answer)]

    @property
    def solution(self) -> str:
        return STEP_SEPARATOR.join(self.steps)


@dataclass(frozen=True)
class ArithmeticProblem(WorkedSteps):
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


def apply_operation(op: str, a: int, b: int) -> int | None:
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
        result = apply_operation(op, left, right)
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
        `list[ArithmeticProblem]`: problems whose values are integers in `[1, MAX_VALUE]`, divisions exact.
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

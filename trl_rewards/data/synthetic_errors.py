"""Single injected errors in the worked solutions of [`synthetic_problems`], of four kinds from easy to hard.

Each kind is a mistake a grader could point at, chosen so that a small model can detect some of them and not others
(the demo reports each kind separately):

- `"copied_number"` (easy: matching): a number of the problem is miscopied into a step, as a near miss (off by 1 to
  3 or 10, or its two digits swapped) that appears nowhere in the problem or the earlier steps;
- `"carried_result"` (easy: matching): a step uses a changed value instead of the result it carries from an earlier
  step, again a near miss that appears nowhere earlier (the start number, written in the problem, is "copied");
- `"wrong_operation"` (easy: local): the operator contradicts the sentence (`"Giving away 5 leaves 20 + 5 = 25."`);
- `"arithmetic_slip"` (hard: needs arithmetic): a step states a wrong result, off by 1 to 3 (`"20 - 5 = 14."`).

Only the slip writes a false equation. Later steps compute consistently on the wrong value, so the first wrong step is
*the* error, and the corrupted final answer always differs from the gold one. Corrupted and correct solutions come
from the same templates with the same number of steps, and every number is a single MiniLM token, so neither the
template nor the length tells them apart; the wrong answer is kept within a factor 2 of the gold one whenever the kind
allows, so that its size does not give it away either.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .synthetic_problems import (
    IMPLIED_OPERAND_TEMPLATES,
    MAX_VALUE,
    OPERATORS,
    ArithmeticProblem,
    Operation,
    WorkedSteps,
    apply_operation,
)

CORRUPTION_KINDS = ("copied_number", "carried_result", "wrong_operation", "arithmetic_slip")
# What a model needs to catch each kind; printed beside the per-kind results.
KIND_DIFFICULTY = {
    "copied_number": "easy: a number absent from the problem",
    "carried_result": "easy: a number absent from the steps before",
    "wrong_operation": "easy: the operator contradicts the sentence",
    "arithmetic_slip": "hard: needs arithmetic",
}
_NEAR_MISSES = (-10, -3, -2, -1, 1, 2, 3, 10)


@dataclass(frozen=True)
class CorruptedSolution(WorkedSteps):
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
    def step_labels(self) -> list[bool]:
        """`True` before `first_error_step`, `False` from it on (the final answer step included)."""
        return [i < self.first_error_step for i in range(len(self.operations) + 1)]


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
        result = apply_operation(symbol, a, b)
        if result is None:
            return None
        if i == index and slip:
            result += slip
            if not 1 <= result <= MAX_VALUE:
                return None
        results.append(result)
        replayed.append(replace(operation, op=symbol, left=a, right=b, result=result))
    return tuple(replayed)


def _near_misses(number: int, taken: set[int]) -> list[int]:
    """Plausible miscopies of `number` (off by 1-3 or 10, digits swapped) that are not in `taken`."""
    misses = {number + delta for delta in _NEAR_MISSES}
    digits = str(number)
    if len(digits) == 2 and digits[0] != digits[1] and digits[1] != "0":
        misses.add(int(digits[::-1]))
    return sorted(m for m in misses if 1 <= m <= MAX_VALUE and m not in taken)


def problem_numbers(problem: ArithmeticProblem) -> set[int]:
    """The numbers written in the problem's text."""
    return {int(number) for number in re.findall(r"\d+", problem.prompt)}


def copied_sides(operation: Operation) -> list[str]:
    """The operands of `operation` copied from numbers written in the problem (`"left"`, `"right"`)."""
    sides = [side for side in ("left", "right") if getattr(operation, f"{side}_from") is None]
    if operation.template in IMPLIED_OPERAND_TEMPLATES:  # "Doubling": the 2 is a word of the problem, not a number
        sides = [side for side in sides if side != "right"]
    return sides


def _candidates(problem: ArithmeticProblem, kind: str, index: int) -> list[dict]:
    operation = problem.operations[index]
    if kind == "arithmetic_slip":
        return [{"slip": delta} for delta in (-3, -2, -1, 1, 2, 3)]
    if kind == "wrong_operation":
        return [{"op": op} for op in OPERATORS if op != operation.op]
    # The wrong number must appear nowhere before it, so that the step reads as a miscopy, not as another number of the
    # problem used by mistake (which a reader could not tell from a different, valid plan).
    taken = problem_numbers(problem) | {
        number
        for previous in problem.operations[:index]
        for number in (previous.left, previous.right, previous.result)
    }
    copied = copied_sides(operation)
    if kind == "copied_number":
        sides = copied
    else:  # carried_result: an operand that is an earlier step's result (the start number counts as copied)
        sides = [side for side in ("left", "right") if getattr(operation, f"{side}_from") is not None]
    return [{side: number} for side in sides for number in _near_misses(getattr(operation, side), taken)]


def check_kinds(kinds: Sequence[str]) -> None:
    """Raises unless `kinds` is a non-empty subset of [`CORRUPTION_KINDS`]."""
    if not kinds or set(kinds) - set(CORRUPTION_KINDS):
        raise ValueError(f"kinds must be a non-empty subset of {list(CORRUPTION_KINDS)}, got {list(kinds)}")


def try_corrupt(problem: ArithmeticProblem, rng: random.Random, kinds: Sequence[str]) -> CorruptedSolution | None:
    """[`corrupt_problem`], or `None` when no change of `kinds` changes the answer."""
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
    check_kinds(kinds)
    wrong = try_corrupt(problem, rng, kinds)
    if wrong is None:
        raise RuntimeError(f"no corruption of kinds {list(kinds)} changes the answer of: {problem.prompt}")
    return wrong

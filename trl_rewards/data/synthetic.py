"""Verifiable synthetic data: multi-step arithmetic word problems with worked solutions and corrupted variants.

The demo must run offline, so it builds its data here instead of downloading it. [`synthetic_problems`] generates the
problems and their correct solutions (steps `"... a op b = c."`, then `"The answer is N."`, every value an integer in
`[1, 300]`); [`synthetic_errors`] gives each problem one corrupted solution with a single injected error of one of
[`CORRUPTION_KINDS`] (a miscopied number of the problem, a changed carried result, an operator that contradicts the
sentence, a wrong result); this module builds the datasets every trainer reads from them.

Step labels follow the usual process-reward-model convention: every step from the first error on is labelled
`False`, the final `"The answer is N."` included, even a later step whose own arithmetic is right, because it builds
on a wrong value (or, for an independent sub-computation, belongs to a solution that can no longer reach the answer).

Text conventions: steps are joined with [`STEP_SEPARATOR`] (`"\\n"`) in the text forms, and every dataset `prompt`
ends with it, so that `prompt + completion` (what TRL's reward trainer and [`encode_pair_texts`] feed the model) puts
the question and each step on their own lines. [`build_synthetic_datasets`] derives, from one list of problems split
into disjoint train and test problems, a preference, an outcome, a stepwise and an RL-prompt view of each split; each
row of the first three names the kind of its corrupted solution in `error_type` (`"none"` for a correct one), so that
evaluations can report each kind separately.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from datasets import Dataset, DatasetDict

from .synthetic_errors import (
    CORRUPTION_KINDS,
    KIND_DIFFICULTY,
    CorruptedSolution,
    check_kinds,
    corrupt_problem,
    try_corrupt,
)
from .synthetic_problems import (
    ANSWER_TEMPLATE,
    MAX_VALUE,
    STEP_SEPARATOR,
    ArithmeticProblem,
    Operation,
    generate_problems,
)

__all__ = [
    "ANSWER_TEMPLATE",
    "CORRUPTION_KINDS",
    "KIND_DIFFICULTY",
    "MAX_VALUE",
    "STEP_SEPARATOR",
    "ArithmeticProblem",
    "CorruptedSolution",
    "Operation",
    "build_synthetic_datasets",
    "corrupt_problem",
    "extract_answer",
    "generate_problems",
]

_ANSWER_PATTERN = re.compile(r"the answer is\s*[*$]*\s*(-?\d+(?:,\d{3})*)(?![.,]?\d)", re.IGNORECASE)


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

        - `"preference_{split}"`: `{"prompt": str, "chosen": str, "rejected": str, "error_type": str}`, one row per
          problem, `error_type` the kind of the rejected solution's error;
        - `"outcome_{split}"`: `{"prompt": str, "completion": str, "label": bool, "error_type": str}`, the correct
          solution (`True`, `"none"`) then the corrupted one (`False`, its kind) of each problem;
        - `"stepwise_{split}"`: `{"prompt": str, "completions": list[str], "labels": list[bool], "error_type": str}`,
          the same two solutions as steps, labelled as the module docstring says;
        - `"prompts_{split}"`: `{"prompt": str, "answer": int}`, one row per problem, for RL with a rule-based
          reward (compare [`extract_answer`] of a completion with `answer`).
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got n_train={n_train}, n_test={n_test}")
    check_kinds(corruption_kinds)
    total = n_train + n_test
    # Spare problems replace the (rare) ones that a restricted `corruption_kinds` cannot corrupt; with the default
    # kinds an arithmetic slip always applies and none is skipped.
    pool = generate_problems(total + max(10, total // 10), seed=seed, min_steps=min_steps, max_steps=max_steps)
    rng = random.Random(f"trl_rewards.synthetic.corruptions:{seed}")
    problems, corrupted = [], []
    for problem in pool:
        if len(problems) == total:
            break
        wrong = try_corrupt(problem, rng, corruption_kinds)
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
            kind = wrong.kind
            preference.append(
                {"prompt": prompt, "chosen": problem.solution, "rejected": wrong.solution, "error_type": kind}
            )
            outcome.append({"prompt": prompt, "completion": problem.solution, "label": True, "error_type": "none"})
            outcome.append({"prompt": prompt, "completion": wrong.solution, "label": False, "error_type": kind})
            correct_labels = [True] * len(problem.steps)
            stepwise.append(
                {"prompt": prompt, "completions": problem.steps, "labels": correct_labels, "error_type": "none"}
            )
            stepwise.append(
                {"prompt": prompt, "completions": wrong.steps, "labels": wrong.step_labels, "error_type": kind}
            )
            prompts.append({"prompt": prompt, "answer": problem.answer})
        datasets[f"preference_{split}"] = Dataset.from_list(preference)
        datasets[f"outcome_{split}"] = Dataset.from_list(outcome)
        datasets[f"stepwise_{split}"] = Dataset.from_list(stepwise)
        datasets[f"prompts_{split}"] = Dataset.from_list(prompts)
    return DatasetDict(datasets)

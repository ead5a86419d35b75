"""Best-of-N: pick one of N candidate solutions per problem by a verifier's score, next to the usual baselines.

Inputs are per problem: the candidates' final answers (already normalized by the caller, e.g. with
`data.outcome.extract_numeric_answer`; `None` for a candidate without an answer, never correct), the gold answer and,
for best-of-N, one score per candidate (ORM score, or an aggregated PRM score; higher is better). N may vary across
problems. Every rate is a solve rate over problems, computed exactly:

- `best_of_n`: the top-scoring candidate's correctness; a tie at the top counts the mean correctness of the tied
  candidates (the expected value of breaking the tie at random), so no arbitrary order decides it;
- `majority_vote`: the most frequent answer (candidates without one do not vote); a tie counts the fraction of tied
  answers that are gold;
- `random_pick`: the expected value of a uniform pick, i.e. the mean correctness of the candidates (not a sample);
- `oracle`: whether any candidate is correct, the ceiling of every selection rule.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

Answer = Hashable | None


def _check(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer], scores=None) -> None:
    if len(answers) != len(gold):
        raise ValueError(f"got answers for {len(answers)} problems but {len(gold)} gold answers")
    if not answers:
        raise ValueError("no problem to evaluate")
    if scores is not None and len(scores) != len(answers):
        raise ValueError(f"got scores for {len(scores)} problems but answers for {len(answers)}")
    for i, candidates in enumerate(answers):
        if len(candidates) == 0:
            raise ValueError(f"problem {i} has no candidate")
        if gold[i] is None:
            raise ValueError(f"problem {i}: the gold answer is None")
        if scores is not None:
            if len(scores[i]) != len(candidates):
                raise ValueError(f"problem {i}: {len(candidates)} candidates but {len(scores[i])} scores")
            bad = [j for j, s in enumerate(scores[i]) if not math.isfinite(float(s))]
            if bad:
                raise ValueError(f"problem {i}: score of candidate {bad[0]} is {scores[i][bad[0]]}, not finite")


def candidate_correctness(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> list[list[bool]]:
    """Per problem and candidate: whether the answer equals the gold one (`None` is never correct)."""
    _check(answers, gold)
    return [[a is not None and a == g for a in candidates] for candidates, g in zip(answers, gold, strict=True)]


def best_of_n_solve_rate(
    answers: Sequence[Sequence[Answer]], gold: Sequence[Answer], scores: Sequence[Sequence[float]]
) -> float:
    """Solve rate of picking the top-scoring candidate (ties at the top: their mean correctness)."""
    _check(answers, gold, scores)
    solved = []
    for correct, problem_scores in zip(candidate_correctness(answers, gold), scores, strict=True):
        s = np.asarray(problem_scores, dtype=np.float64)
        top = np.flatnonzero(s == s.max())
        solved.append(float(np.mean(np.asarray(correct)[top])))
    return float(np.mean(solved))


def majority_vote_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> float:
    """Solve rate of the most frequent answer (ties: the fraction of tied answers that are gold)."""
    _check(answers, gold)
    solved = []
    for candidates, g in zip(answers, gold, strict=True):
        votes = Counter(a for a in candidates if a is not None)
        if not votes:
            solved.append(0.0)
            continue
        most = max(votes.values())
        tied = [a for a, n in votes.items() if n == most]
        solved.append(sum(a == g for a in tied) / len(tied))
    return float(np.mean(solved))


def random_pick_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> float:
    """Expected solve rate of a uniformly random candidate: the mean over problems of the fraction correct."""
    return float(np.mean([np.mean(correct) for correct in candidate_correctness(answers, gold)]))


def oracle_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> float:
    """Fraction of problems with at least one correct candidate."""
    return float(np.mean([any(correct) for correct in candidate_correctness(answers, gold)]))


def best_of_n_report(
    answers: Sequence[Sequence[Answer]], gold: Sequence[Answer], scores: Sequence[Sequence[float]]
) -> dict[str, float | int]:
    """
    Best-of-N by score next to majority vote, random pick and the oracle.

    Args:
        answers (`Sequence[Sequence[Hashable | None]]`): per problem, each candidate's normalized final answer.
        gold (`Sequence[Hashable]`): per problem, the gold answer.
        scores (`Sequence[Sequence[float]]`): per problem, each candidate's verifier score (higher is better).

    Returns:
        `dict` with `n_problems`, `n_candidates` (total), `best_of_n`, `majority_vote`, `random_pick`, `oracle`.
    """
    _check(answers, gold, scores)
    return {
        "n_problems": len(answers),
        "n_candidates": sum(len(c) for c in answers),
        "best_of_n": best_of_n_solve_rate(answers, gold, scores),
        "majority_vote": majority_vote_solve_rate(answers, gold),
        "random_pick": random_pick_solve_rate(answers, gold),
        "oracle": oracle_solve_rate(answers, gold),
    }

"""Best-of-N: pick one of N candidate solutions per problem by a verifier's score, next to the usual baselines.

Inputs are per problem: the candidates' final answers (already normalized by the caller, e.g. with
[`extract_answer_with_rule`] or `data.outcome.extract_numeric_answer`; `None` for a candidate without an answer,
never correct), the gold answer and, for the verifier-based rules, one score per candidate (ORM score, or an
aggregated PRM score; higher is better). N may vary across problems. Every rate is a solve rate over problems,
computed exactly:

- `pass@n` (`oracle`): whether any candidate is correct, the ceiling of every selection rule;
- `maj@n` (`majority_vote`): the most frequent answer (candidates without one do not vote); a tie counts the
  fraction of tied answers that are gold (self-consistency, Wang et al. 2023);
- `bon@n` (`best_of_n`): the top-scoring candidate's correctness; a tie at the top counts the mean correctness of
  the tied candidates (the expected value of breaking the tie at random), so no arbitrary order decides it;
- `weighted_vote@n`: each distinct answer gets the sum of its candidates' verifier weights, the highest sum wins
  (DIVERSE, Li et al. 2023; Math-Shepherd; Weaver); tied sums count the fraction of tied answers that are gold;
- `random_pick`: the expected value of a uniform pick, i.e. the mean correctness of the candidates (not a sample).

Weights of the weighted vote must be non-negative (a negative weight would vote *against* an answer, and a shift of
the scores would change the winner). With `score_kind="probability"` (default) the scores are used as they are
(a PRM's aggregated P(correct), an ORM's σ(logit)) and a negative one raises; with `score_kind="logit"` the weight is
σ(score), for an ORM's raw logit. `bon@n` depends only on the order of the scores, so it is the same either way.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from ..data.outcome import extract_numeric_answer
from ..data.synthetic import extract_answer
from ..rewards.rule_rewards import extract_final_answer, last_boxed
from .pairwise_report import bootstrap_ci

Answer = Hashable | None
Scores = Sequence[Sequence[float]]
SCORE_KINDS = ("probability", "logit")
# Which marker `extract_numeric_answer` matched (the same alternatives, in the same order), named for the report.
_MARKER_RULES = re.compile(
    r"(?P<gsm8k_hashes>####)|(?P<a_line>^A:)|(?P<answer_heading>^# Answer)"
    r"|(?P<answer_is>\b[Tt]he (?:final )?answer is:?)",
    re.MULTILINE,
)
ANSWER_RULES = ("boxed", "gsm8k_hashes", "a_line", "answer_heading", "answer_is", "answer_is_loose")


def extract_answer_with_rule(text: str) -> tuple[str | None, str | None]:
    """
    The final answer of a solution, exactly as [`extract_final_answer`] reads it, and the rule that gave it.

    Rules (names in `ANSWER_RULES`): `"boxed"` (the last `\\boxed{...}`, when no marker follows it), the marker
    rules of [`extract_numeric_answer`] after the last box: `"gsm8k_hashes"` (`#### N`), `"a_line"` (an `A: N` line),
    `"answer_heading"` (a `# Answer` line), `"answer_is"` (`The answer is N`, `The final answer is: N`), and
    `"answer_is_loose"` (`The answer is **5**` or upper case, read by the demo's parser).

    Args:
        text (`str`): the solution.

    Returns:
        `tuple[str | None, str | None]`: `(answer, rule)`, the answer as a string (an integer of the loose rule is
        turned into its string, so that every rule gives comparable values), or `(None, None)` without an answer.
    """
    answer = extract_final_answer(text)
    if answer is None:
        return None, None
    boxed = last_boxed(text)
    after = text if boxed is None else text[boxed[1] :]
    if extract_numeric_answer(after) is not None:
        rule = next(name for name, value in list(_MARKER_RULES.finditer(after))[-1].groupdict().items() if value)
    elif extract_answer(after) is not None:
        rule = "answer_is_loose"
    else:
        rule = "boxed"
    return str(answer), rule


def _check(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer], scores=None, name: str = "scores") -> None:
    if len(answers) != len(gold):
        raise ValueError(f"got answers for {len(answers)} problems but {len(gold)} gold answers")
    if not answers:
        raise ValueError("no problem to evaluate")
    if scores is not None and len(scores) != len(answers):
        raise ValueError(f"got {name} for {len(scores)} problems but answers for {len(answers)}")
    for i, candidates in enumerate(answers):
        if len(candidates) == 0:
            raise ValueError(f"problem {i} has no candidate")
        if gold[i] is None:
            raise ValueError(f"problem {i}: the gold answer is None")
        if scores is not None:
            where = f"problem {i}" + ("" if name == "scores" else f" ({name})")
            if len(scores[i]) != len(candidates):
                raise ValueError(f"{where}: {len(candidates)} candidates but {len(scores[i])} scores")
            bad = [j for j, s in enumerate(scores[i]) if not math.isfinite(float(s))]
            if bad:
                raise ValueError(f"{where}: score of candidate {bad[0]} is {scores[i][bad[0]]}, not finite")


def candidate_correctness(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> list[list[bool]]:
    """Per problem and candidate: whether the answer equals the gold one (`None` is never correct)."""
    _check(answers, gold)
    return [[a is not None and a == g for a in candidates] for candidates, g in zip(answers, gold, strict=True)]


def _tied_share(totals: Mapping[Answer, float], gold: Answer) -> float:
    """Fraction of the answers with the highest total that are gold; 0 without any answer. Totals within a relative
    1e-12 of the top one tie: a sum of float weights must not win by its rounding."""
    if not totals:
        return 0.0
    top = max(totals.values())
    tied = [a for a, total in totals.items() if total >= top - 1e-12 * max(1.0, abs(top))]
    return sum(a == gold for a in tied) / len(tied)


def _per_problem_best_of_n(answers, gold, scores) -> list[float]:
    solved = []
    for correct, problem_scores in zip(candidate_correctness(answers, gold), scores, strict=True):
        s = np.asarray(problem_scores, dtype=np.float64)
        top = np.flatnonzero(s == s.max())
        solved.append(float(np.mean(np.asarray(correct)[top])))
    return solved


def _per_problem_majority(answers, gold) -> list[float]:
    _check(answers, gold)
    return [
        _tied_share(Counter(a for a in candidates if a is not None), g)
        for candidates, g in zip(answers, gold, strict=True)
    ]


def vote_weights(scores: Scores, score_kind: str = "probability") -> list[list[float]]:
    """The non-negative weights of the weighted vote: the scores as they are (`"probability"`, a negative one
    raises naming its problem and candidate) or σ(score) (`"logit"`)."""
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind must be one of {SCORE_KINDS}, got {score_kind!r}")
    if score_kind == "logit":
        return [expit(np.asarray(row, dtype=np.float64)).tolist() for row in scores]
    for i, row in enumerate(scores):
        negative = [j for j, s in enumerate(row) if s < 0]
        if negative:
            raise ValueError(
                f"problem {i}: score of candidate {negative[0]} is {row[negative[0]]} < 0; the weighted vote sums "
                "non-negative weights: pass score_kind='logit' for logits (weight σ(score))"
            )
    return [[float(s) for s in row] for row in scores]


def _per_problem_weighted_vote(answers, gold, scores, score_kind) -> list[float]:
    solved = []
    for candidates, g, weights in zip(answers, gold, vote_weights(scores, score_kind), strict=True):
        totals: dict[Answer, float] = defaultdict(float)
        for a, w in zip(candidates, weights, strict=True):
            if a is not None:
                totals[a] += w
        solved.append(_tied_share(totals, g))
    return solved


def best_of_n_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer], scores: Scores) -> float:
    """Solve rate of picking the top-scoring candidate (ties at the top: their mean correctness)."""
    _check(answers, gold, scores)
    return float(np.mean(_per_problem_best_of_n(answers, gold, scores)))


def majority_vote_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> float:
    """Solve rate of the most frequent answer (ties: the fraction of tied answers that are gold)."""
    return float(np.mean(_per_problem_majority(answers, gold)))


def weighted_vote_solve_rate(
    answers: Sequence[Sequence[Answer]], gold: Sequence[Answer], scores: Scores, score_kind: str = "probability"
) -> float:
    """Solve rate of the answer with the largest sum of verifier weights (see [`vote_weights`]; ties: the
    fraction of tied answers that are gold; candidates without an answer do not vote)."""
    _check(answers, gold, scores)
    return float(np.mean(_per_problem_weighted_vote(answers, gold, scores, score_kind)))


def random_pick_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> float:
    """Expected solve rate of a uniformly random candidate: the mean over problems of the fraction correct."""
    return float(np.mean([np.mean(correct) for correct in candidate_correctness(answers, gold)]))


def oracle_solve_rate(answers: Sequence[Sequence[Answer]], gold: Sequence[Answer]) -> float:
    """Fraction of problems with at least one correct candidate (pass@N)."""
    return float(np.mean([any(correct) for correct in candidate_correctness(answers, gold)]))


def _rates(per_problem: Mapping[str, list[float]], bootstrap: int, seed: int) -> dict[str, Any]:
    """Each rate, and with `bootstrap` resamples its 95% percentile interval over problems; every rate is resampled
    with the same seed, hence over the same resampled problems."""
    out: dict[str, Any] = {}
    for key, values in per_problem.items():
        out[key] = float(np.mean(values))
        if bootstrap:
            out[f"{key}_ci"] = list(bootstrap_ci(np.mean, values, n_resamples=bootstrap, seed=seed))
    return out


def best_of_n_report(
    answers: Sequence[Sequence[Answer]],
    gold: Sequence[Answer],
    scores: Scores | Mapping[str, Scores] | None = None,
    *,
    score_kind: str = "probability",
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    pass@N, maj@N, BoN@N and the verifier-weighted vote, next to a random pick, with bootstrap intervals over problems.

    Args:
        answers (`Sequence[Sequence[Hashable | None]]`): per problem, each candidate's normalized final answer.
        gold (`Sequence[Hashable]`): per problem, the gold answer.
        scores (`Sequence[Sequence[float]]`, `Mapping[str, Sequence[Sequence[float]]]` or `None`, *optional*):
            per problem, each candidate's verifier score (higher is better); a mapping gives several score sets,
            e.g. `{aggregation: scores}` for the aggregations of one PRM, each reported under its name; `None`:
            only the rates that need no verifier.
        score_kind (`str`, *optional*, defaults to `"probability"`): how the weighted vote reads the scores, one of
            `SCORE_KINDS` (see the module docstring).
        bootstrap (`int`, *optional*, defaults to `0`): bootstrap resamples over problems; when > 0 every rate gets
            `"<rate>_ci"` = `[low, high]` (95% percentile interval, [`bootstrap_ci`]).
        seed (`int`, *optional*, defaults to `0`): bootstrap seed, shared by every rate.

    Returns:
        `dict` with `n_problems`, `n_candidates` (total), `pass@n`, `maj@n`, `random_pick`, the earlier names
        `oracle` (= `pass@n`) and `majority_vote` (= `maj@n`); for one score set `bon@n`, `weighted_vote@n` and
        `best_of_n` (= `bon@n`); for a mapping, `verifiers`: `{name: {"bon@n", "weighted_vote@n", ...}}`.
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer (number of resamples), got {bootstrap!r}")
    score_sets = scores if isinstance(scores, Mapping) else {"scores": scores} if scores is not None else {}
    if isinstance(scores, Mapping) and not scores:
        raise ValueError("scores is an empty mapping: pass at least one score set")
    _check(answers, gold)
    for name, values in score_sets.items():
        _check(answers, gold, values, name if isinstance(scores, Mapping) else "scores")
        vote_weights(values, score_kind)  # a negative probability fails before any resampling
    correct = candidate_correctness(answers, gold)
    report: dict[str, Any] = {"n_problems": len(answers), "n_candidates": sum(len(c) for c in answers)}
    baselines: dict[str, list[float]] = {
        "pass@n": [float(any(c)) for c in correct],
        "maj@n": _per_problem_majority(answers, gold),
        "random_pick": [float(np.mean(c)) for c in correct],
    }
    report.update(_rates(baselines, bootstrap, seed))
    report["oracle"], report["majority_vote"] = report["pass@n"], report["maj@n"]
    verifiers = {}
    for name, values in score_sets.items():
        per_problem: dict[str, list[float]] = {
            "bon@n": _per_problem_best_of_n(answers, gold, values),
            "weighted_vote@n": _per_problem_weighted_vote(answers, gold, values, score_kind),
        }
        verifiers[name] = _rates(per_problem, bootstrap, seed)
    if isinstance(scores, Mapping):
        report["verifiers"] = verifiers
    elif scores is not None:
        report.update(verifiers["scores"])
        report["best_of_n"] = report["bon@n"]
    return report


def answer_rule_counts(
    texts: Sequence[str], extractor: Callable[[str], tuple[Any, Any]] = extract_answer_with_rule
) -> dict[str | None, int]:
    """How many `texts` each answer rule read (`None`: no answer), for a report next to the rates."""
    return dict(Counter(extractor(text)[1] for text in texts))

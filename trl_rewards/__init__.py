"""trl_rewards: reward models as first-class citizens of TRL.

Names are resolved lazily, so `import trl_rewards` is cheap, never imports deepspeed or bitsandbytes, and works with
every TRL release the package supports (the trainers need trl>=1.16; the rest also runs on trl 1.12).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "BradleyTerryConfig": "configs",
    "DatasetArguments": "configs",
    "BradleyTerryTrainer": "trainers.bt",
    "PreferenceCollator": "data.collators",
    "tokenize_preferences": "data.preference",
    "validate_preference_rows": "data.preference",
    "load_table": "data.loading",
    "bradley_terry_loss": "losses",
    "reward_centering_loss": "losses",
    "load_reward_model": "modeling",
    "merge_adapter": "modeling",
    "reward_peft_config": "modeling",
    "RewardScorer": "scoring",
    "EvalArguments": "configs",
    "ScoreArguments": "configs",
    "ScorerArguments": "configs",
    "evaluate_preferences": "evaluation",
    "aggregate_categories": "evaluation",
    "write_report": "evaluation",
    "as_scorer": "evaluation",
    "RewardFunctionScorer": "evaluation",
    "ScoreCache": "cache",
    "CachedScorer": "cache",
    "WinRateCallback": "callbacks",
    "RewardModelFunction": "rewards",
    "ProcessRewardFunction": "rewards",
    "AnswerCorrectnessReward": "rewards",
    "RewardEnsemble": "ensemble",
    "RewardEnsembleMemberError": "ensemble",
    "RewardFunctionModule": "ppo",
    "RewardMetricsCallback": "ppo",
    "attach_reward_metrics": "ppo",
    "ProcessRewardConfig": "configs",
    "OutcomeRewardConfig": "configs",
    "ProcessRewardTrainer": "trainers.process",
    "OutcomeRewardTrainer": "trainers.outcome",
    "StepCollator": "data.process_tokenization",
    "tokenize_stepwise": "data.process_tokenization",
    "OutcomeCollator": "data.outcome_tokenization",
    "tokenize_outcomes": "data.outcome_tokenization",
    "process_step_loss": "losses",
    "step_tag_loss": "losses",
    "outcome_loss": "losses",
    "token_outcome_loss": "losses",
    "ProcessRewardScorer": "process_scoring",
    "aggregate_step_scores": "process_scoring",
    "load_process_reward_model": "process_scoring",
    "best_of_n_report": "best_of_n",
    "step_metrics": "verifier_metrics",
    "outcome_metrics": "verifier_metrics",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trl_rewards' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__

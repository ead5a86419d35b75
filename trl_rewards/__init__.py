"""trl_rewards: reward models as first-class citizens of TRL.

The public API, i.e. what the README documents. Names are resolved lazily, so `import trl_rewards` is cheap, never
imports deepspeed or bitsandbytes, and works with every TRL release the package supports (the trainers need
trl>=1.16; the rest also runs on trl 1.12). The layout follows the data (see the README's "Layout").
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # data: formats, validation, converters, tokenization, collators
    "load_table": "data.loading",
    "validate_preference_rows": "data.preference",
    "tokenize_preferences": "data.preference",
    "validate_stepwise_rows": "data.stepwise",
    "from_prm800k_raw": "data.stepwise",
    "from_prm800k_stepwise_critic": "data.stepwise",
    "from_math_shepherd": "data.stepwise",
    "tokenize_stepwise": "data.process_tokenization",
    "validate_outcome_rows": "data.outcome",
    "load_gsm8k_verifier": "data.outcome",
    "split_by_question": "data.outcome",
    "tokenize_outcomes": "data.outcome_tokenization",
    "validate_attribute_rows": "data.attributes",
    "tokenize_attributes": "data.attributes",
    "from_helpsteer2": "data.attributes",
    "AttributeCollator": "data.attributes",
    "validate_pairwise_rows": "data.pairwise",
    "tokenize_pairwise": "data.pairwise",
    "PairwiseCollator": "data.pairwise",
    "PreferenceCollator": "data.collators",
    "best_worst_pairs": "data.pair_building",
    "spin_pairs": "data.pair_building",
    "StepCollator": "data.collators",
    "OutcomeCollator": "data.collators",
    # models, adapters, losses
    "load_reward_model": "modeling",
    "load_process_reward_model": "modeling",
    "reward_peft_config": "modeling",
    "merge_adapter": "merge",
    "average_reward_models": "merge",
    "interpolation_check": "evaluation.interpolation",
    "bradley_terry_loss": "losses",
    "reward_centering_loss": "losses",
    "process_step_loss": "losses",
    "step_tag_loss": "losses",
    "outcome_loss": "losses",
    "token_outcome_loss": "losses",
    "masked_regression_loss": "losses",
    "pairwise_preference_loss": "losses",
    "pairwise_win_logit": "losses",
    # trainers and their configs
    "BradleyTerryConfig": "trainers.bt_config",
    "BradleyTerryTrainer": "trainers.bt_trainer",
    "OutcomeRewardConfig": "trainers.orm_config",
    "OutcomeRewardTrainer": "trainers.orm_trainer",
    "ProcessRewardConfig": "trainers.prm_config",
    "ProcessRewardTrainer": "trainers.prm_trainer",
    "ProcessGRPOConfig": "trainers.process_grpo_config",
    "ProcessGRPOTrainer": "trainers.process_grpo_trainer",
    "normalize_step_rewards": "step_advantages",
    "token_advantages": "step_advantages",
    "AttributeRewardConfig": "trainers.attr_config",
    "AttributeRewardTrainer": "trainers.attr_trainer",
    "PairwisePreferenceConfig": "trainers.pairwise_config",
    "PairwisePreferenceTrainer": "trainers.pairwise_trainer",
    # inference
    "RewardScorer": "inference.sequence_scoring",
    "ProcessRewardScorer": "inference.step_scoring",
    "AttributeScorer": "inference.attribute_scoring",
    "PairwiseScorer": "inference.pairwise_scoring",
    "aggregate_step_scores": "inference.aggregation",
    # rewards
    "RewardModelFunction": "rewards.model_rewards",
    "ProcessRewardFunction": "rewards.model_rewards",
    "AttributeRewardFunction": "rewards.attribute_rewards",
    "PairwiseRewardFunction": "rewards.pairwise_rewards",
    "AttributeGating": "rewards.attribute_rewards",
    "fit_attribute_gating": "rewards.attribute_rewards",
    "fit_gating_from_pairs": "rewards.attribute_rewards",
    "AnswerCorrectnessReward": "rewards.rule_rewards",
    "StepRewardFunction": "rewards.step_rewards",
    "ArithmeticStepReward": "rewards.step_rewards",
    "batch_zscore": "rewards.normalization",
    "group_zscore": "rewards.normalization",
    "sigmoid_squash": "rewards.normalization",
    "RunningZScore": "rewards.normalization",
    "restore_normalizers": "rewards.normalization",
    "RewardEnsemble": "rewards.ensemble",
    "RewardEnsembleMemberError": "rewards.ensemble",
    "RewardFunctionModule": "rewards.ppo",
    "build_reward": "rewards.from_config",
    "RemoteRewardFunction": "rewards.remote_rewards",
    "ImplicitRewardFunction": "rewards.implicit_rewards",
    "JudgeRewardFunction": "rewards.implicit_rewards",
    "ImplicitRewardScorer": "inference.implicit_scoring",
    "JudgeScorer": "inference.judge_scoring",
    "OpenAIJudgeScorer": "rewards.openai_judge",
    # evaluation
    "pairwise_report": "evaluation.pairwise_report",
    "bootstrap_ci": "evaluation.pairwise_report",
    "step_metrics": "evaluation.verifier_metrics",
    "outcome_metrics": "evaluation.verifier_metrics",
    "attribute_metrics": "evaluation.attribute_metrics",
    "pairwise_preference_metrics": "evaluation.pairwise_eval",
    "best_of_n_report": "evaluation.best_of_n",
    "extract_answer_with_rule": "evaluation.best_of_n",
    "processbench_metrics": "evaluation.step_benchmarks",
    "prmscore": "evaluation.step_benchmarks",
    "load_processbench": "data.step_benchmarks",
    "load_prmbench": "data.step_benchmarks",
    "ScoreCache": "evaluation.cache",
    "CachedScorer": "evaluation.cache",
    "evaluate_preferences": "evaluation.runner",
    "evaluate_rewardbench": "evaluation.rewardbench",
    "aggregate_categories": "evaluation.runner",
    "as_scorer": "evaluation.runner",
    "RewardFunctionScorer": "evaluation.runner",
    "write_report": "evaluation.report",
    # callbacks
    "WinRateCallback": "callbacks",
    "NormalizerCheckpointCallback": "callbacks",
    "RewardMetricsCallback": "callbacks",
    "RewardHackingMonitor": "callbacks",
    "attach_reward_metrics": "callbacks",
    # packaged DeepSpeed / accelerate configs
    "deepspeed_config_path": "scripts.configs",
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

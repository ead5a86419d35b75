"""Rewards for online RL in TRL's reward-function contract: model rewards, rule rewards, normalization, the ensemble,
and the adapter that makes any of them the `reward_model` of TRL's `PPOTrainer`."""

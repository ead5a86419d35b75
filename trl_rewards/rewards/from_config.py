"""Reward functions described by a YAML file, for TRL's own command line: `trl grpo --reward_funcs
trl_rewards.rewards.from_config.reward` with `TRL_REWARDS_REWARD_CONFIG=rewards.yaml` in the environment.

TRL's `grpo` script imports each dotted `--reward_funcs` entry and reads the attribute; `reward` is built on first
access from the file the variable names (so importing this module costs nothing), and kept. The file holds one member
or an ensemble:

```yaml
members:                      # or a single member at the top level, e.g. `model: path/to/reward-model`
  - model: runs/rm            # RewardModelFunction(path, **options)
    name: rm
    max_length: 512
  - prm: runs/prm             # ProcessRewardFunction(path, **options)
    aggregation: min
  - answer_correctness: {}    # AnswerCorrectnessReward(**options)
aggregation: mean             # every other key is a RewardEnsemble argument
normalization: group
num_generations: 8
```

Every kind of member, its first argument, and the class the other keys go to as options:

| key | value | reward function |
|---|---|---|
| `model` | reward model (BT / outcome) path or Hub id | `RewardModelFunction` |
| `prm` | process reward model | `ProcessRewardFunction` |
| `attributes` | multi-attribute reward model | `AttributeRewardFunction` (`weights:` or `gating:`) |
| `pairwise` | pair preference model | `PairwiseRewardFunction` (`reference:` required) |
| `implicit` | DPO policy | `ImplicitRewardFunction` (`ref_model:`, `beta:`) |
| `judge` | instruct model, or the served model's name with `endpoint:` | `JudgeRewardFunction` |
| `remote` | server URL(s), comma-separated | `RemoteRewardFunction` (async; the ensemble then is too) |
| `answer_correctness` | a mapping of options (or `{}`) | `AnswerCorrectnessReward` |
"""

from __future__ import annotations

import os
from typing import Any

ENV_VARIABLE = "TRL_REWARDS_REWARD_CONFIG"
# kind -> (module of this package, class): the YAML key names the kind and holds the class's first argument.
_KINDS = {
    "model": ("model_rewards", "RewardModelFunction"),
    "prm": ("model_rewards", "ProcessRewardFunction"),
    "attributes": ("attribute_rewards", "AttributeRewardFunction"),
    "pairwise": ("pairwise_rewards", "PairwiseRewardFunction"),
    "implicit": ("implicit_rewards", "ImplicitRewardFunction"),
    "judge": ("implicit_rewards", "JudgeRewardFunction"),
    "remote": ("remote_rewards", "RemoteRewardFunction"),
    "answer_correctness": ("rule_rewards", "AnswerCorrectnessReward"),
}


def _member(spec: Any, where: str):
    import importlib

    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a member is a mapping with one of {list(_KINDS)}, got {spec!r}")
    kinds = [kind for kind in _KINDS if kind in spec]
    if len(kinds) != 1:
        raise ValueError(f"{where}: name exactly one of {list(_KINDS)}, got keys {sorted(spec)}")
    kind = kinds[0]
    options = {k: v for k, v in spec.items() if k != kind}
    module, name = _KINDS[kind]
    cls = getattr(importlib.import_module(f".{module}", __package__), name)
    try:
        if kind == "answer_correctness":  # its value is a mapping of options, not a first argument
            if not isinstance(spec[kind] or {}, dict):
                raise ValueError(
                    f"{where}: 'answer_correctness' takes a mapping of options (or {{}}), got {spec[kind]!r}"
                )
            return cls(**{**(spec[kind] or {}), **options})
        return cls(spec[kind], **options)
    except TypeError as error:  # an option the class does not take: say which member and which class
        raise TypeError(f"{where}: {kind} member ({name}): {error}") from error


def build_reward(config: str | os.PathLike | dict):
    """The reward function (one member, or a `RewardEnsemble`) described by a YAML file or an equivalent mapping."""
    import yaml

    from .ensemble import RewardEnsemble

    where = os.fspath(config) if not isinstance(config, dict) else "reward config"
    if not isinstance(config, dict):
        if not os.path.isfile(config):
            raise FileNotFoundError(f"reward config {where!r} does not exist")
        with open(config) as f:
            config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(config).__name__}")
    if "members" not in config:
        return _member(config, where)
    members = config["members"]
    if not isinstance(members, list) or not members:
        raise ValueError(f"{where}: 'members' must be a non-empty list")
    options = {k: v for k, v in config.items() if k != "members"}
    return RewardEnsemble([_member(m, f"{where}: members[{i}]") for i, m in enumerate(members)], **options)


def __getattr__(name: str):
    if name != "reward":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    path = os.environ.get(ENV_VARIABLE)
    if not path:
        raise AttributeError(
            f"trl_rewards.rewards.from_config.reward needs {ENV_VARIABLE}=<rewards.yaml> in the environment"
        )
    reward = build_reward(path)
    globals()["reward"] = reward
    return reward

"""Packaging promises: the import is light and exports what `__all__` says."""

import subprocess
import sys

import trl_rewards


def test_import_does_not_pull_heavy_backends():
    """`import trl_rewards`, the scorer, metrics, data layer, normalizers, reward functions and ensemble never import
    deepspeed or bitsandbytes. (Anything that imports `transformers.Trainer*` imports peft, which imports bitsandbytes
    when it is installed: not ours, so the trainer callbacks live in `trl_rewards.callbacks`.)"""
    code = (
        "import sys, trl_rewards; "
        "from trl_rewards import RewardScorer, load_reward_model, RewardModelFunction, RewardEnsemble; "
        "import trl_rewards.metrics, trl_rewards.data.preference, trl_rewards.data.synthetic; "
        "import trl_rewards.normalization, trl_rewards.rewards, trl_rewards.ensemble; "
        "bad = [m for m in ('deepspeed', 'bitsandbytes') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkpoint_callback_importable_from_normalization_on_first_access():
    """`NormalizerCheckpointCallback` moved to `trl_rewards.callbacks`; the old import path resolves to the same class,
    and importing the normalizers alone does not import transformers' Trainer stack (peft)."""
    code = (
        "import sys, trl_rewards.normalization as n; "
        "assert 'peft' not in sys.modules and 'transformers.trainer' not in sys.modules, 'eager Trainer import'; "
        "from trl_rewards.normalization import NormalizerCheckpointCallback; "
        "from trl_rewards.callbacks import NormalizerCheckpointCallback as moved; "
        "assert NormalizerCheckpointCallback is moved"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_exported_name_resolves():
    for name in trl_rewards.__all__:
        assert getattr(trl_rewards, name) is not None, name

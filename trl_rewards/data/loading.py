"""Reading datasets from local files, saved folders or the Hub, with the same call."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping

from datasets import Dataset, DatasetDict, get_dataset_split_names, load_dataset, load_from_disk

FILE_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}


def load_table(name: str, split: str = "train", config: str | None = None, max_rows: int | None = None) -> Dataset:
    """
    Loads one split of a dataset.

    Args:
        name (`str`): a local file (see `FILE_BUILDERS` for suffixes), a `save_to_disk` folder or a Hub name.
        split (`str`): split to return (a single local file is the `"train"` split; any other split of a single file
            is an error).
        config (`str`, *optional*): Hub configuration.
        max_rows (`int`, *optional*): keep only the first rows.

    Returns:
        [`~datasets.Dataset`]
    """
    builder = next((b for suffix, b in FILE_BUILDERS.items() if name.endswith(suffix)), None)
    if builder is not None:
        if not os.path.isfile(name):
            raise FileNotFoundError(f"dataset file {name!r} does not exist")
        dataset = load_dataset(builder, data_files={"train": name}, split="train")
    elif os.path.isdir(name) and os.path.isfile(os.path.join(name, "dataset_dict.json")):
        dataset = load_from_disk(name)[split]
    elif os.path.isdir(name) and os.path.isfile(os.path.join(name, "dataset_info.json")):
        dataset = load_from_disk(name)
    else:
        dataset = load_dataset(name, config, split=split)
    if isinstance(dataset, DatasetDict):
        dataset = dataset[split]
    if max_rows is not None:
        dataset = dataset.select(range(min(max_rows, len(dataset))))
    return dataset


def iter_rows(rows: Iterable[Mapping] | Dataset) -> Iterator[Mapping]:
    """The rows of a `Dataset` (read in batches: row-by-row access to an Arrow table is an order of magnitude
    slower) or of any iterable of dicts, as dicts."""
    if isinstance(rows, Dataset):
        for batch in rows.iter(batch_size=1000):
            yield from (dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True))
    else:
        yield from rows


def has_split(name: str, split: str, config: str | None = None) -> bool:
    """
    Whether `name` is a multi-split source (saved `DatasetDict` folder or Hub dataset) with `split`.

    `False` means only that the split (or the Hub configuration `config`) does not exist. Any other failure to list
    the splits (Hub outage, authentication, unknown dataset) raises a `RuntimeError` naming the dataset: guessing
    "no split" there would silently train without evaluation.
    """
    if any(name.endswith(suffix) for suffix in FILE_BUILDERS):
        return False
    if os.path.isdir(name):
        path = os.path.join(name, "dataset_dict.json")
        return os.path.isfile(path) and os.path.isdir(os.path.join(name, split))
    try:
        return split in get_dataset_split_names(name, config)
    except ValueError as error:
        if config is not None and f"BuilderConfig '{config}' not found" in str(error):
            return False
        failure = error
    except Exception as error:  # noqa: BLE001 - re-raised below with the dataset's name
        failure = error
    raise RuntimeError(
        f"could not list the splits of dataset {name!r}" + (f" (config {config!r})" if config else "") + f" to look "
        f"for its {split!r} split: {type(failure).__name__}: {failure}"
    ) from failure

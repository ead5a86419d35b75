"""`trl-rewards configs`: the packaged DeepSpeed / accelerate configs, for pip users who have no clone.

The files live once, in `trl_rewards/deepspeed_configs/` (package data); a clone's top-level `deepspeed_configs/` is a
link to that folder. The accelerate YAMLs name their DeepSpeed JSON as `deepspeed_configs/<name>.json`, relative to
where `accelerate launch` runs: `trl-rewards configs` writes the folder there (default `./deepspeed_configs`).
"""

from __future__ import annotations

import argparse
import logging
import os
from importlib import resources

logger = logging.getLogger(__name__)

PACKAGE_FOLDER = "deepspeed_configs"


def _folder():
    return resources.files("trl_rewards") / PACKAGE_FOLDER


def deepspeed_config_path(name: str | None = None) -> str:
    """
    Path of a packaged config file (e.g. `"zero3.yaml"`, `"zero3.json"`), or of their folder when `name` is `None`.

    Raises `FileNotFoundError` naming the available files when `name` is not one of them.
    """
    folder = _folder()
    if name is None:
        return os.fspath(folder)
    available = sorted(entry.name for entry in folder.iterdir() if entry.is_file())
    if name not in available:
        raise FileNotFoundError(f"no packaged config {name!r}; available: {available}")
    return os.fspath(folder / name)


def write_configs(output_dir: str = PACKAGE_FOLDER, overwrite: bool = False) -> list[str]:
    """Copies every packaged config into `output_dir`; refuses to overwrite a different file unless `overwrite`."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for entry in sorted(_folder().iterdir(), key=lambda e: e.name):
        if not entry.is_file():
            continue
        target = os.path.join(output_dir, entry.name)
        content = entry.read_bytes()
        if os.path.exists(target) and not overwrite:
            with open(target, "rb") as f:
                if f.read() != content:
                    raise FileExistsError(f"{target} exists and differs from the packaged file; pass --overwrite")
        with open(target, "wb") as f:
            f.write(content)
        written.append(target)
    return written


def main(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(
        prog="trl-rewards configs",
        description="Write the packaged DeepSpeed ZeRO-2/3/offload configs and their accelerate YAMLs into a folder "
        "(run it where you will run `accelerate launch`: the YAMLs name deepspeed_configs/<name>.json).",
    )
    parser.add_argument("--output_dir", default=PACKAGE_FOLDER, help="Folder to write (default: ./deepspeed_configs).")
    parser.add_argument("--overwrite", action="store_true", help="Replace files that differ from the packaged ones.")
    args = parser.parse_args(argv)
    if os.path.realpath(args.output_dir) == os.path.realpath(deepspeed_config_path()):
        logger.info("%s is the packaged folder itself; nothing to write", args.output_dir)
        return []
    written = write_configs(args.output_dir, overwrite=args.overwrite)
    logger.info("wrote %d files to %s", len(written), args.output_dir)
    return written

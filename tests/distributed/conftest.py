"""What the multi-process tests share: how a worker script is launched on two CPU processes (plain
`torch.distributed.run`, or `accelerate launch` with one of the repo's DeepSpeed configs), run, and imported."""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Launcher:
    """Commands and a checked runner for the two-process workers in this folder."""

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @staticmethod
    def env() -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
        env.pop("ACCELERATE_USE_DEEPSPEED", None)
        return env

    def torchrun(self, num_processes: int = 2) -> list[str]:
        """`torch.distributed.run`: plain data parallel, no DeepSpeed."""
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes)] + [
            "--master_port",
            str(self.free_port()),
        ]

    def deepspeed(self, stage: int, num_processes: int = 2) -> list[str]:
        """`accelerate launch` with `deepspeed_configs/zero{stage}.json`. DeepSpeed is always installed by `./dev`: a
        missing one fails here, with the reason, rather than in the launched processes."""
        assert importlib.util.find_spec("deepspeed") is not None, (
            "deepspeed is not installed; `./dev env` installs it (pip install --no-build-isolation deepspeed)"
        )
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
        return [accelerate, "launch", "--num_processes", str(num_processes), "--use_deepspeed"] + [
            "--zero_stage",
            str(stage),
            "--deepspeed_config_file",
            str(REPO / "deepspeed_configs" / f"zero{stage}.json"),
            "--main_process_port",
            str(self.free_port()),
        ]

    def run(self, cmd: list[str], cwd: Path, timeout: int = 600) -> None:
        """Runs `cmd`; a failure shows the end of its output."""
        result = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=cwd)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    @staticmethod
    def module(path: Path):
        """Imports a worker script, for the constants it shares with its test."""
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


@pytest.fixture(scope="session")
def launcher() -> Launcher:
    return Launcher()

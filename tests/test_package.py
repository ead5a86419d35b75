"""Packaging promises: the layout has no import circle, the import is light, and the public API is what the README
documents."""

import ast
import graphlib
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trl_rewards

PACKAGE = Path(trl_rewards.__file__).parent
README = PACKAGE.parent / "README.md"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package modules it imports, anywhere in the file (inside functions too), relative or absolute."""
    modules = {module_name(path, root): path for path in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from pkg import sub` imports the module `pkg.sub` when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def room(module: str) -> str:
    """The room of a module: its sub-package (`trl_rewards.data`), or itself for a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_no_import_cycle_between_modules():
    """No module reaches itself through imports, counting imports inside functions (which only hide a circle)."""
    assert find_cycle(import_graph(PACKAGE)) is None


def test_no_import_cycle_between_rooms():
    """The rooms (data, modeling, losses, step_format, trainers, inference, rewards, evaluation, callbacks, scripts)
    import each other in one direction only: the package reads as the data flow."""
    rooms: dict[str, set[str]] = {}
    for module, targets in import_graph(PACKAGE).items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    assert find_cycle(rooms) is None


def test_cycle_detector_sees_imports_inside_functions(tmp_path):
    """The detector is not blind: a circle closed by an import inside a function (the old callbacks ⇄ normalization
    shim) and one through a relative `from . import` are both found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and set(cycle) == {"pkg.a", "pkg.sub.b"}


def test_subpackage_inits_import_nothing():
    """Importing one module of a room (e.g. `trainers.base_config`) must not import the whole room (every trainer)."""
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE:
            continue
        body = ast.parse(init.read_text()).body
        assert all(isinstance(node, ast.Expr) for node in body), f"{init} does more than carry a docstring"


def test_every_module_starts_with_a_docstring():
    for path in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no module docstring"


def test_no_module_over_450_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long


def test_import_does_not_pull_heavy_backends():
    """`import trl_rewards`, the scorers, metrics, data layer, normalizers, reward functions and ensemble never import
    deepspeed or bitsandbytes, nor transformers' Trainer stack (peft): callbacks and trainers live apart."""
    code = (
        "import sys, trl_rewards; "
        "from trl_rewards import RewardScorer, ProcessRewardScorer, load_reward_model, RewardModelFunction, "
        "ProcessRewardFunction, RewardEnsemble, RunningZScore, pairwise_report; "
        "import trl_rewards.evaluation.metrics, trl_rewards.data.preference, trl_rewards.data.synthetic; "
        "import trl_rewards.rewards.normalization, trl_rewards.rewards.rule_rewards, trl_rewards.evaluation.runner; "
        "bad = [m for m in ('deepspeed', 'bitsandbytes', 'peft', 'transformers.trainer') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_exported_name_resolves():
    for name in trl_rewards.__all__:
        assert getattr(trl_rewards, name) is not None, name


def _readme_imports() -> list[tuple[str, str]]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trl_rewards"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


def test_readme_code_imports_exist():
    """Every name the README's Python blocks import from trl_rewards exists; top-level names are in `__all__`."""
    imports = _readme_imports()
    assert len(imports) >= 8, imports  # the README shows training, scoring, rewards and evaluation
    for module, name in imports:
        assert hasattr(importlib.import_module(module), name), f"from {module} import {name}"
        if module == "trl_rewards":
            assert name in trl_rewards.__all__, name


def test_public_api_has_no_cli_plumbing():
    for name in ("EvalArguments", "ScoreArguments", "ScorerArguments", "DatasetArguments", "main", "run_eval"):
        assert name not in trl_rewards.__all__
        with pytest.raises(AttributeError):
            getattr(trl_rewards, name)


def test_deepspeed_configs_exist_once(tmp_path):
    """The clone's top-level `deepspeed_configs/` is the packaged folder (one copy), and `trl-rewards configs` writes
    the same files for pip users; every accelerate YAML names a JSON that is in the folder."""
    from trl_rewards.scripts.cli import main

    top = PACKAGE.parent / "deepspeed_configs"
    assert top.resolve() == Path(trl_rewards.deepspeed_config_path()).resolve()
    packaged = {p.name: p.read_bytes() for p in Path(trl_rewards.deepspeed_config_path()).iterdir()}
    assert {"zero2.json", "zero3.json", "zero3_offload.json", "zero3.yaml"} <= set(packaged)
    for name, content in packaged.items():
        for json_name in re.findall(rb"deepspeed_configs/(\S+\.json)", content):
            assert json_name.decode() in packaged, (name, json_name)
    out = tmp_path / "deepspeed_configs"
    assert main(["configs", "--output_dir", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == packaged
    (out / "zero3.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["configs", "--output_dir", str(out)])
    with pytest.raises(FileNotFoundError, match="available"):
        trl_rewards.deepspeed_config_path("zero4.json")


def test_ci_runs_the_readme_test_command():
    """The README's quick start is two commands (the demo, the tests), and `.ci/run` executes exactly that test
    command with no arguments (with arguments, `./dev test` runs only a subset of the main suite)."""
    quick_start = re.search(r"## Quick start.*?```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["./dev demo", "./dev test"], commands
    ci = (PACKAGE.parent / ".ci" / "run").read_text()
    executed = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert executed[-1] == "exec ./dev test", executed
    assert "./dev test-ppo" not in ci and "pytest" not in "\n".join(executed)

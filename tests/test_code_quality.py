"""ruff and mypy are part of the suite: the code must stay lint- and type-clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return found


def test_ruff_check_and_format():
    ruff = _tool("ruff")
    check = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy():
    mypy = _tool("mypy")
    run = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_import_layers():
    """The import-linter contracts in pyproject.toml: core < engines < service | offline tool."""
    lint = _tool("lint-imports")
    run = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_layer_contract_catches_an_upward_import(tmp_path):
    """A contract that cannot fail is no contract: an upward import in a copy breaks it."""
    import shutil as sh

    for package in ("edge_core", "engines", "edge_daemon", "train"):
        sh.copytree(ROOT / package, tmp_path / package, ignore=sh.ignore_patterns("__pycache__"))
    sh.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    schema = tmp_path / "edge_core" / "schema.py"
    schema.write_text(schema.read_text() + "\nimport edge_daemon.pipeline  # noqa\n")
    lint = _tool("lint-imports")
    run = subprocess.run(
        [lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)},
    )  # fmt: skip
    assert run.returncode != 0
    assert "edge_core.schema -> edge_daemon.pipeline" in run.stdout


def test_edge_tc_commands_come_from_entry_points():
    """`edge-tc` lists the commands each package registers, the service's and the train tool's."""
    from edge_core.cli import build_parser

    parser = build_parser()
    sub = next(
        a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    assert {"synth", "inspect", "bench", "run", "check-config", "train"} <= set(sub.choices)

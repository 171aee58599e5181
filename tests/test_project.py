"""Project-wide promises: layering (design.md §2), lint, types, cheap import, CLI entry points."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support import ROOT

BIN = ROOT / ".venv" / "bin"


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def test_import_linter_contracts_hold() -> None:
    result = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_codec_imports_only_the_standard_library() -> None:
    """Stronger than the import-linter contract: any third-party import in codec fails."""
    offenders = []
    for path in sorted((ROOT / "toolkit" / "codec").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                allowed = top in sys.stdlib_module_names or name.startswith(
                    ("toolkit.codec", "toolkit.errors", "toolkit.types", "toolkit.timing")
                )
                if not allowed:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == []


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "toolkit", "tests"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_clean_and_strict_on_the_core_layers() -> None:
    # pyproject.toml sets strict = true for codec, crypto, sansio, errors, types, timing; the rest is checked too.
    result = subprocess.run(
        [_tool("mypy"), "--no-error-summary", "toolkit"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_toolkit_is_cheap() -> None:
    code = (
        "import sys, toolkit, toolkit.codec.demux, toolkit.types, toolkit.timing;"
        "heavy = [m for m in ('scapy', 'ipywidgets', 'nacl', 'graphviz') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import toolkit pulled in {out}"


def test_python_dash_m_toolkit_is_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "natkit" in result.stdout


def test_cli_rejects_an_unknown_command_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "no-such-command"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("natkit: error:")

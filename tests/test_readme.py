"""The README stays true to the code: its Python example runs, its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def test_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_every_command_in_the_cli_table_exists() -> None:
    helptext = subprocess.run(
        [sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = set(re.findall(r"^\| `natkit (\w[\w-]*)", README, flags=re.M))
    assert commands, "README has no command table"
    for cmd in commands:
        assert re.search(rf"^\s+{cmd}\s", helptext, flags=re.M), f"README documents `natkit {cmd}`, --help lacks it"


def test_setup_commands_are_documented_and_exist() -> None:
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)

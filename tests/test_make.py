"""`make dashboard` on a shared machine: a token when asked for, kept off every command line.

The recipe runs for real against a stand-in ``voila`` (a script that prints its arguments and the
token it was handed), so these check what Voila would receive, not the Makefile's text."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dashboard(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[list[str], str]:
    """Run ``make dashboard`` with a stand-in venv: (voila's arguments, its JUPYTER_TOKEN or "unset")."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").touch()
    voila = bin_dir / "voila"
    voila.write_text('#!/bin/sh\necho "token=${JUPYTER_TOKEN-unset}"\nfor a in "$@"; do echo "arg=$a"; done\n')
    voila.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()
    environment = {k: v for k, v in os.environ.items() if k not in ("DASHBOARD_TOKEN", "SHARED", "JUPYTER_TOKEN")}
    done = subprocess.run(["make", "-s", "dashboard", f"BIN={bin_dir}", f"STAMP={stamp}", *args], cwd=ROOT,
                          env={**environment, **(env or {})}, capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    return [line[4:] for line in lines if line.startswith("arg=")], lines[0].removeprefix("token=")


def test_default_dashboard_is_local_and_tokenless(tmp_path):
    argv, token = _dashboard(tmp_path)
    assert "--token" not in argv and token == "unset"
    assert argv[0] == "dashboard/dashboard.ipynb" and "--port=8866" in argv
    assert not any(a.startswith("--ip") or a.startswith("--Voila.ip") for a in argv)  # localhost only


def test_shared_asks_voila_for_a_generated_token(tmp_path):
    argv, token = _dashboard(tmp_path, "SHARED=1")
    assert argv[-1] == "--token" and token == "unset"   # Voila makes one and prints it in its link


@pytest.mark.parametrize("where", ["environment", "command line"])
def test_a_chosen_token_reaches_voila_only_through_its_environment(tmp_path, where):
    secret = "s3cret-for-the-test"
    if where == "environment":
        argv, token = _dashboard(tmp_path, env={"DASHBOARD_TOKEN": secret})
    else:
        argv, token = _dashboard(tmp_path, f"DASHBOARD_TOKEN={secret}")
    assert token == secret and "--token" in argv
    assert not any(secret in a for a in argv)   # never in voila's arguments, which `ps` shows
    dry = subprocess.run(["make", "-n", "dashboard", f"BIN={tmp_path / 'bin'}", f"STAMP={tmp_path / 'stamp'}"],
                         cwd=ROOT, env={**os.environ, "DASHBOARD_TOKEN": secret}, capture_output=True, text=True)
    assert secret not in dry.stdout             # the recipe's shell line holds $DASHBOARD_TOKEN, not the value


def test_the_readme_says_when_to_use_a_token():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "SHARED=1 make dashboard" in text and "DASHBOARD_TOKEN" in text

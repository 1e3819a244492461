"""The layering of DESIGN.md, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from livemind.paths import REPO_ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_package_keeps_every_layering_contract():
    res = lint(REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.slow
def test_a_deliberate_violation_breaks_its_contract(tmp_path):
    shutil.copytree(REPO_ROOT / "livemind", tmp_path / "livemind", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "livemind/rec/data/scratch.py").write_text("from livemind.rec.model.generator import OneLiveGenerator\n")
    (tmp_path / "livemind/world/scratch.py").write_text("import livemind.cli\n")
    res = lint(tmp_path)
    assert res.returncode == 1
    out = " ".join(res.stdout.split())
    assert "rec's data, live state and tokenizer import no model, alignment, evaluation or baseline BROKEN" in out
    assert "world imports no model code BROKEN" in out  # through the CLI, which imports rec
    assert "nothing but the CLI's own entry imports the CLI, and only serve sits above rec and think BROKEN" in out
    assert "livemind.rec.data.scratch -> livemind.rec.model.generator" in out

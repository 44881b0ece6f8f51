"""The tutorials: every lesson runs as a script in quick mode (MMARNN_QUICK=1) and has the parts
a lesson must have (a goal cell with the paper's section, package calls, a checked result,
a figure, exercises at the end)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9]*.py"))
CELL = re.compile(r"^# %%(.*)$", re.MULTILINE)


def cells(source: str) -> list[tuple[str, str]]:
    """The ``# %%`` cells of a lesson as (kind, body): kind "markdown" or "code"."""
    marks = list(CELL.finditer(source))
    return [("markdown" if "[markdown]" in mark.group(1) else "code",
             source[mark.end():marks[i + 1].start() if i + 1 < len(marks) else len(source)])
            for i, mark in enumerate(marks)]


def test_there_are_lessons():
    assert len(LESSONS) >= 7, [p.name for p in LESSONS]


@pytest.fixture(scope="module")
def quick_env(tmp_path_factory):
    """One cache (the extension is built once, SynthAffect shared) and one output folder for
    every lesson of this module."""
    cache = tmp_path_factory.mktemp("tutorial_cache")
    out = tmp_path_factory.mktemp("tutorial_out")
    env = {**os.environ, "MMARNN_QUICK": "1", "MMARNN_CACHE": str(cache), "MMARNN_TUTORIAL_OUT": str(out),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return env, out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_lesson_runs_in_quick_mode(lesson, quick_env):
    env, out = quick_env
    result = subprocess.run([sys.executable, str(lesson)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (
        f"{lesson.name} exited with {result.returncode}\n--- stderr (tail) ---\n{result.stderr[-4000:]}"
        f"\n--- stdout (tail) ---\n{result.stdout[-1500:]}"
    )
    assert "matched" in result.stdout, f"{lesson.name} printed no 'matched' line:\n{result.stdout[-1500:]}"
    figures = list((out / lesson.stem).glob("*.png"))
    assert figures, f"{lesson.name} saved no figure under {out / lesson.stem}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_lesson_has_the_required_parts(lesson):
    source = lesson.read_text()
    parts = cells(source)
    assert parts and source.lstrip().startswith("# %% [markdown]"), "the first cell must be markdown"
    kind, goal = parts[0]
    assert "Goal." in goal, "the first cell states the goal"
    assert re.search(r"section \d", goal), "the first cell names the paper's section"
    kind, last = parts[-1]
    assert kind == "markdown" and "## Exercises" in last, "the last cell is the exercises"
    assert len(re.findall(r"^# \d\. ", last, re.MULTILINE)) >= 2, "at least two exercises"
    assert sum(kind == "code" for kind, _ in parts) >= 3, "code in several small cells"

    tree = ast.parse(source)
    assert any(isinstance(node, ast.Assert) for node in ast.walk(tree)), "an explicit check (assert)"
    assert "matched" in source, "a printed line saying what matched"
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert any(module.startswith("mmarnn_min") for module in imported), "the lesson calls the package"
    assert "_common.save(" in source, "at least one figure"


def test_readme_lists_every_lesson():
    readme = (TUTORIALS / "README.md").read_text()
    for lesson in LESSONS:
        assert lesson.name in readme, f"{lesson.name} is missing from tutorials/README.md"

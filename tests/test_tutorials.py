"""The tutorials: every lesson runs as a script in quick mode (MMARNN_QUICK=1) and has the parts
a lesson must have (a goal cell with the paper's section, package calls, a checked result,
a figure, exercises at the end that say how to check an answer); every lesson's worked
solutions run and pass their checks (``tutorials/checks.py``), and the checks reject wrong
answers."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9]*.py"))
SOLUTIONS = sorted((TUTORIALS / "solutions").glob("[0-9]*.py"))
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


def run_script(script: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (
        f"{script.name} exited with {result.returncode}\n--- stderr (tail) ---\n{result.stderr[-4000:]}"
        f"\n--- stdout (tail) ---\n{result.stdout[-1500:]}"
    )
    return result


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_lesson_runs_in_quick_mode(lesson, quick_env):
    env, out = quick_env
    result = run_script(lesson, env)
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
    assert "checks.py" in readme and "solutions/" in readme, "the README says how to check an exercise"


def test_no_reference_to_files_a_student_does_not_have():
    for path in [*TUTORIALS.rglob("*.py"), *TUTORIALS.rglob("*.md")]:
        text = path.read_text()
        for missing in ("DESIGN", "DATA_FORMATS", "../shared"):
            assert missing not in text, f"{path.relative_to(REPO)} mentions {missing}"


# ---- exercises: every one has a check or a worked solution --------------------------------

@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_every_lesson_has_a_solutions_file(lesson):
    assert (TUTORIALS / "solutions" / lesson.name).is_file(), f"tutorials/solutions/{lesson.name} is missing"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_exercise_cell_says_how_to_check(lesson):
    kind, last = cells(lesson.read_text())[-1]
    assert "checks." in last, "the exercise cell names the check of each exercise"
    assert f"solutions/{lesson.name}" in last, "the exercise cell points at the worked solutions"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda path: path.stem)
def test_solutions_pass_their_checks(solution, quick_env):
    env, _ = quick_env
    result = run_script(solution, env)
    calls = solution.read_text().count("checks.check_")
    passed = re.findall(r"^exercise \S+: correct$", result.stdout, re.MULTILINE)
    assert calls >= 1, f"{solution.name} calls no check"
    assert len(passed) == calls, f"{solution.name}: {len(passed)} of {calls} checks printed 'correct'"


@pytest.fixture(scope="module")
def checks(quick_env):
    """tutorials/checks.py, imported as a lesson imports it (from the tutorials folder), with
    the lessons' quick settings and cache."""
    env, _ = quick_env
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MMARNN_QUICK", "MMARNN_CACHE"):
            patch.setenv(name, env[name])
        patch.syspath_prepend(str(TUTORIALS))
        import checks as module
        yield module


def zeros_like_lstm(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
    return x.new_zeros(x.shape[0], x.shape[1], h0.shape[1])


def zeros_like_mrnn(state, z, lengths):
    return z.new_zeros(z.shape[0], state["head.bias"].shape[0])


WRONG_ANSWERS = {   # a plausible wrong answer for every check that needs no video file or training run
    "check_01_1": (("anger", "disgust"), 4),
    "check_01_2": (0.72, "fear", "anger"),
    "check_01_3": ({1, 2, 5, 12, 25, 26},),
    "check_02_2": (1.0, 0.0),
    "check_03_1": (0.0, math.log(7), math.log(2), math.log(2)),
    "check_03_2": (0.0, "expression"),
    "check_03_3": ("surprise",),
    "check_04_1": ({0, 1, 2, 3},),
    "check_04_3": (zeros_like_lstm,),
    "check_05_1": (12, 0.5, 0.5),
    "check_05_2": (1e-3,),
    "check_05_3": (10,),
    "check_06_1": ("k_real",),
    "check_06_2": (0, 0.0),
    "check_06_3": ("register_autograd", ValueError),
    "check_07_1": (lambda predictions, labels: (predictions.std(0), labels.mean(0)),),
    "check_07_2": ([0.0, 1.0, 2.0],),
    "check_08_1": (2_026_247, 0.5),
    "check_08_2": (zeros_like_mrnn,),
    "check_08_3": (0.0, 0.01),
}


@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_a_wrong_answer_fails_its_check(name, checks):
    with pytest.raises(AssertionError, match="not yet"):
        getattr(checks, name)(*WRONG_ANSWERS[name])

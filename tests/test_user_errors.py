"""Every mistake a user can make at a command's edge, as a table: each case runs the command
through its real entry point (``mmarnn_min.cli.run``, what ``python -m`` calls) and asserts
exit code 2, exactly one line on stderr naming the culprit, and that a finished training run
beside it is byte-identical afterwards. A few cases through ``python -m`` itself prove the
entry points are wired the same way."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mmarnn_min import ablate, ceiling, cli, predict, train
from mmarnn_min.data.synth import SynthConfig, export_videos

REPO = Path(__file__).resolve().parents[1]
MAINS = {"train": train.main, "predict": predict.main, "ablate": ablate.main, "ceiling": ceiling.main}
TINY_RUN = ["--config", "tiny", "--device", "cpu", "--mma-epochs", "1", "--mrnn-epochs", "1"]
TINY_VIDEOS = SynthConfig(train_videos=8, eval_videos=4, min_frames=8, max_frames=12, image_size=24, canvas_size=48)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A finished tiny training run, a video with its landmarks, and a Hume-Reaction root."""
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("MMARNN_CACHE")
    os.environ["MMARNN_CACHE"] = str(cache)
    root = tmp_path_factory.mktemp("world")
    train.main([*TINY_RUN, "--out", str(root / "run")])
    hume = root / "hume"
    export_videos(TINY_VIDEOS, hume)
    video = export_videos(TINY_VIDEOS, root / "videos", splits=("test",), count=1)[0]
    yield {"run": root / "run", "hume": hume, "video": video, "root": root}
    if previous is None:
        os.environ.pop("MMARNN_CACHE")
    else:
        os.environ["MMARNN_CACHE"] = previous


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by relative path."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


# ---- setups: each writes what its case needs under ``tmp`` ------------------------------------

def write_config(name: str, data: object) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, world: dict) -> None:
        (tmp / name).write_text(data if isinstance(data, str) else json.dumps(data))
    return setup


def foreign_directory(tmp: Path, world: dict) -> None:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "thesis.tex").write_text("my thesis")


def a_file(tmp: Path, world: dict) -> None:
    (tmp / "afile").write_text("not a directory")


def hume_with(edit: Callable[[list[list[str]]], None]) -> Callable[[Path, dict], None]:
    """A copy of the Hume-Reaction root whose labels.csv rows ``edit`` changes."""
    def setup(tmp: Path, world: dict) -> None:
        import shutil

        shutil.copytree(world["hume"], tmp / "hume")
        with open(tmp / "hume" / "labels.csv", newline="") as file:
            rows = list(csv.reader(file))
        edit(rows)
        with open(tmp / "hume" / "labels.csv", "w", newline="") as file:
            csv.writer(file).writerows(rows)
    return setup


def blank_train_label(rows: list[list[str]]) -> None:
    rows[1][3] = ""          # the first video's Anxiety: a train video (export writes train first)


def no_validation_videos(tmp: Path, world: dict) -> None:
    import shutil

    shutil.copytree(world["hume"], tmp / "hume")
    with open(tmp / "hume" / "partition.csv", newline="") as file:
        rows = [row for row in csv.reader(file) if row[-1] != "devel"]
    kept = {row[0] for row in rows[1:]}
    with open(tmp / "hume" / "partition.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    with open(tmp / "hume" / "labels.csv", newline="") as file:
        labels = [row for i, row in enumerate(csv.reader(file)) if i == 0 or row[0].strip("[]") in kept]
    with open(tmp / "hume" / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows(labels)


def copy_run(tmp: Path, world: dict) -> Path:
    import shutil

    return Path(shutil.copytree(world["run"], tmp / "run"))


def truncated_mma(tmp: Path, world: dict) -> None:
    run = copy_run(tmp, world)
    data = (run / "mma" / "best.pt").read_bytes()
    (run / "mma" / "best.pt").write_bytes(data[: len(data) // 2])


def mrnn_of_another_run(tmp: Path, world: dict) -> None:
    run = copy_run(tmp, world)
    state = torch.load(run / "mrnn" / "best.pt", weights_only=False)
    state["run_id"] = "0" * 32
    torch.save(state, run / "mrnn" / "best.pt")


def nan_weights(tmp: Path, world: dict) -> None:
    run = copy_run(tmp, world)
    state = torch.load(run / "mrnn" / "best.pt", weights_only=False)
    state["model"]["head.bias"].fill_(float("nan"))
    torch.save(state, run / "mrnn" / "best.pt")


def video_copy(landmarks: Callable[[np.ndarray], np.ndarray] | bytes) -> Callable[[Path, dict], None]:
    """The test video copied to tmp/clip.mp4 with a landmarks file: ``landmarks`` of the
    video's true ones (N, 5, 2), or raw bytes."""
    def setup(tmp: Path, world: dict) -> None:
        import shutil

        shutil.copy(world["video"], tmp / "clip.mp4")
        if isinstance(landmarks, bytes):
            (tmp / "clip.landmarks.npy").write_bytes(landmarks)
        else:
            np.save(tmp / "clip.landmarks.npy", landmarks(np.load(world["video"].with_suffix(".landmarks.npy"))))
    return setup


def corrupt_video(tmp: Path, world: dict) -> None:
    (tmp / "x.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def finished_ceiling(tmp: Path, world: dict) -> None:
    (tmp / "ceiling").mkdir()
    (tmp / "ceiling" / "ceiling.json").write_text("{}")


@dataclass
class Case:
    name: str
    command: str
    argv: list[str]                     # {run} {tmp} {video} {hume} are filled in
    culprit: str                        # what the one line must name
    setup: Callable[[Path, dict], None] | None = None


CASES = [
    # ---- train: flags and config values ----
    Case("unknown stage", "train", ["train-everything", "--out", "{run}"], "unknown stage(s) train-everything"),
    Case("stages out of order", "train", ["mrnn", "mma", "--out", "{run}"], "in their order"),
    Case("resume and overwrite together", "train", ["--resume", "--overwrite", "--out", "{run}"], "choose one"),
    Case("a batch of zero images", "train", [*TINY_RUN, "--out", "{run}", "--mma-batch-size", "0"],
         "mma.batch_size (--mma-batch-size): must be >= 2"),
    Case("a batch of one video for the Pearson loss", "train", [*TINY_RUN, "--out", "{run}", "--mrnn-batch-size", "1"],
         "mrnn.batch_size (--mrnn-batch-size): must be >= 2 (the Pearson loss"),
    Case("a learning rate that is not a number", "train", [*TINY_RUN, "--out", "{run}", "--mrnn-lr", "nan"],
         "mrnn.lr (--mrnn-lr): must be a finite number, got nan"),
    Case("a negative learning rate", "train", [*TINY_RUN, "--out", "{run}", "--e2e-mma-lr", "-1"],
         "e2e.mma_lr (--e2e-mma-lr): must be a finite number > 0"),
    Case("zero epochs", "train", [*TINY_RUN, "--out", "{run}", "--mma-epochs", "0"], "mma.epochs (--mma-epochs): must be >= 1"),
    Case("zero threads", "train", [*TINY_RUN, "--out", "{run}", "--threads", "0"], "--threads must be >= 1"),
    Case("a GPU that is not there", "train", [*TINY_RUN, "--out", "{run}", "--device", "cuda"], "--device cuda: no CUDA"),
    Case("a device name torch does not know", "train", [*TINY_RUN, "--out", "{run}", "--device", "gpu0"], "--device gpu0"),
    Case("an unknown preset", "train", ["--config", "huge", "--out", "{run}"], "--config huge: neither a preset"),
    Case("a config file that is not JSON", "train", ["--config", "{tmp}/c.json", "--out", "{run}"],
         "c.json:1: not valid JSON", write_config("c.json", "{data: 1")),
    Case("a string where a bool belongs", "train", ["--config", "{tmp}/c.json", "--out", "{run}"],
         "mma.flip (--mma-flip): must be true or false, got 'false'", write_config("c.json", {"mma": {"flip": "false"}})),
    Case("a float where an int belongs", "train", ["--config", "{tmp}/c.json", "--out", "{run}"],
         "mrnn.epochs (--mrnn-epochs): must be an integer, got 3.5", write_config("c.json", {"mrnn": {"epochs": 3.5}})),
    Case("an unknown field", "train", ["--config", "{tmp}/c.json", "--out", "{run}"],
         "mrnn: has no field(s) hidden", write_config("c.json", {"mrnn": {"hidden": 3}})),
    Case("a section that is not a mapping", "train", ["--config", "{tmp}/c.json", "--out", "{run}"],
         "mma: must be a mapping of fields", write_config("c.json", {"mma": [1, 2]})),
    Case("an unknown RNN", "train", ["--config", "{tmp}/c.json", "--out", "{run}"],
         "mrnn.variant.rnn (--mrnn-rnn): must be one of gru", write_config("c.json", {"mrnn": {"variant": {"rnn": "tcn"}}})),
    Case("videos longer than the MRNN reads", "train", [*TINY_RUN, "--out", "{tmp}/new", "--mrnn-max-frames", "8"],
         "--mrnn-max-frames): SynthAffect's videos have up to data.max_frames = 16"),
    Case("inconsistent SynthAffect lengths", "train", [*TINY_RUN, "--out", "{tmp}/new", "--data-min-frames", "40"],
         "data: need 8 <= min_frames <= max_frames"),
    # ---- train: the run directory ----
    Case("an empty --out", "train", [*TINY_RUN, "--out", ""], "argument --out: must name a directory"),
    Case("--out is a file", "train", [*TINY_RUN, "--out", "{tmp}/afile"], "is a file", a_file),
    Case("--out holds other files", "train", [*TINY_RUN, "--out", "{tmp}"], "notes", foreign_directory),
    Case("a fresh run into a finished run", "train", [*TINY_RUN, "--out", "{run}"],
         "already holds results this command would replace (mma, features/latest.json, mrnn, oracle)"),
    Case("a finished stage run again", "train", ["mrnn", "--out", "{run}", "--device", "cpu"],
         "already holds results this command would replace (mrnn, oracle)"),
    Case("resume with a changed config", "train", ["--resume", "--out", "{run}", "--mrnn-hidden-size", "32"],
         "mrnn.model.hidden_size was 16, now 32"),
    Case("a later stage on results made with other values", "train", ["mrnn", "--out", "{run}", "--mma-epochs", "4",
                                                                      "--overwrite"], "stage mma's results"),
    Case("a later stage without the results it reads", "train", ["e2e", "--config", "tiny", "--out", "{tmp}/new"],
         "stage e2e needs"),
    # ---- train: real data ----
    Case("a Hume root that does not exist", "train", [*TINY_RUN, "--out", "{tmp}/new", "--hume", "{tmp}/nowhere"],
         "hume (--hume): no such directory"),
    Case("a blank label in a training row", "train", [*TINY_RUN, "--out", "{tmp}/new", "--hume", "{tmp}/hume"],
         "labels.csv:2: column 'Anxiety'", hume_with(blank_train_label)),
    Case("a Hume root without validation videos", "train", [*TINY_RUN, "--out", "{tmp}/new", "--hume", "{tmp}/hume"],
         "no val video", no_validation_videos),
    # ---- predict ----
    Case("no trained model", "predict", ["{video}", "--checkpoint", "{tmp}"], "no trained model at"),
    Case("a truncated checkpoint", "predict", ["{video}", "--checkpoint", "{tmp}/run"],
         "best.pt cannot be read as a checkpoint", truncated_mma),
    Case("networks of two runs", "predict", ["{video}", "--checkpoint", "{tmp}/run"],
         "come from different training runs", mrnn_of_another_run),
    Case("a checkpoint holding NaN", "predict", ["{video}", "--checkpoint", "{tmp}/run"],
         "give values that are not numbers", nan_weights),
    Case("a missing video", "predict", ["{tmp}/nothing.mp4", "--checkpoint", "{run}"], "nothing.mp4"),
    Case("a corrupt video", "predict", ["{tmp}/x.mp4", "--checkpoint", "{run}"], "x.mp4", corrupt_video),
    Case("a stride of zero", "predict", ["{video}", "--checkpoint", "{run}", "--stride", "0"], "--stride must be >= 1"),
    Case("a GPU that is not there (predict)", "predict", ["{video}", "--checkpoint", "{run}", "--device", "cuda"],
         "--device cuda: no CUDA"),
    Case("landmarks of the wrong shape", "predict", ["{tmp}/clip.mp4", "--checkpoint", "{run}"],
         "clip.landmarks.npy: expected", video_copy(lambda true: true[:3])),
    Case("a landmarks file that is not .npy", "predict", ["{tmp}/clip.mp4", "--checkpoint", "{run}"],
         "clip.landmarks.npy cannot be read", video_copy(b"not numpy")),
    Case("no face in any frame", "predict", ["{tmp}/clip.mp4", "--checkpoint", "{run}"], "no face found",
         video_copy(lambda true: np.full_like(true, np.nan))),
    Case("RetinaFace without its package", "predict", ["{video}", "--checkpoint", "{run}", "--detector", "retinaface"],
         "retinaface-pytorch"),
    # ---- ablate ----
    Case("zero seeds", "ablate", ["--out", "{tmp}/abl", "--seeds", "0"], "seeds (--seeds): must be >= 1"),
    Case("an unknown variant", "ablate", ["--out", "{tmp}/abl", "--variants", "paper,transformer"], "transformer"),
    Case("features of a run that has none", "ablate", ["--out", "{tmp}/abl", "--source", "features", "--run", "{tmp}"],
         "needs cached features"),
    # ---- ceiling ----
    Case("zero frames", "ceiling", ["--out", "{tmp}/c", "--frames", "0"], "--frames must be >= 1"),
    Case("a finished ceiling run", "ceiling", ["--config", "tiny", "--out", "{tmp}/ceiling"], "already holds a ceiling run",
         finished_ceiling),
]


def fill(argument: str, world: dict, tmp: Path) -> str:
    return argument.format(run=world["run"], tmp=tmp, video=world["video"], hume=world["hume"])


def run_case(case: Case, world: dict, tmp: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    argv = [fill(argument, world, tmp) for argument in case.argv]
    try:
        code = cli.run(MAINS[case.command], argv, f"python -m mmarnn_min.{case.command}")
    except SystemExit as exit_info:   # argparse
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_user_mistake_is_one_line_and_exit_code_2_and_nothing_is_lost(case, world, tmp_path, capsys):
    if case.setup is not None:
        case.setup(tmp_path, world)
    before = snapshot(world["run"])
    code, err = run_case(case, world, tmp_path, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"python -m mmarnn_min.{case.command}: error: ") and case.culprit in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(world["run"]) == before, "the finished run was changed"


def test_a_second_process_is_refused_while_the_run_is_busy(world, capsys):
    before = snapshot(world["run"])
    with open(world["run"] / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("process 4242 on elsewhere")
        held.flush()
        code, err = run_case(Case("busy", "train", ["--resume", "--out", "{run}", "--device", "cpu"], ""), world,
                             world["root"], capsys)
        held.truncate(0)
    assert code == 2 and "is in use by process 4242 on elsewhere" in err
    assert snapshot(world["run"]) == before


def test_the_debug_flag_shows_the_traceback(world):
    with pytest.raises(Exception, match="no trained model"):
        cli.run(predict.main, [str(world["video"]), "--checkpoint", str(world["root"] / "none"), "--debug"],
                "python -m mmarnn_min.predict")


def test_resume_of_the_finished_run_and_predict_still_work(world, capsys):
    """After every refused case the run is intact: a plain --resume ends as it was, predict reads it."""
    before = json.loads((world["run"] / "report.json").read_text())
    assert cli.run(train.main, ["--resume", "--out", str(world["run"]), "--device", "cpu"], "train") == 0
    after = json.loads((world["run"] / "report.json").read_text())
    assert after["pearson_mean"] == before["pearson_mean"]
    capsys.readouterr()
    assert cli.run(predict.main, [str(world["video"]), "--checkpoint", str(world["run"]), "--json"], "predict") == 0
    result = json.loads(capsys.readouterr().out)                       # --json: valid JSON, nothing else
    assert len(result["intensities"]) == 7 and all(np.isfinite(list(result["intensities"].values())))


@pytest.mark.parametrize("command, argv, culprit", [
    ("train", ["--config", "tiny", "--mrnn-lr", "nan", "--out", "unused"], "--mrnn-lr"),
    ("predict", ["missing.mp4", "--checkpoint", "nowhere"], "no trained model"),
])
def test_the_python_dash_m_entry_points(command, argv, culprit, tmp_path):
    result = subprocess.run([sys.executable, "-m", f"mmarnn_min.{command}", *argv], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and culprit in result.stderr
    assert not (tmp_path / "unused").exists()


def test_the_table_holds_every_command():
    assert {case.command for case in CASES} == set(MAINS) and len(CASES) >= 45

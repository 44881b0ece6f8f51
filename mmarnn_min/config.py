"""The configuration of a whole run, and the one place that holds the presets.

A run is described by one ``PipelineConfig``: the data (``SynthConfig``), each stage's
training config (``MMATrainConfig``, ``MRNNTrainConfig``, ``E2ETrainConfig``, each with its
network's config inside) and where real data lives. Every field becomes a flag of
``python -m mmarnn_min.train`` (``mmarnn_min.cli_config``) and is written to the run's
``config.json``.

The presets, ``preset(name)``:
    tiny      seconds on a CPU: for tests and for trying the commands
    default   the first command: minutes on a laptop CPU (64 x 64 crops; Hume-like videos of
              3-16 s at 5 frames a second, T = 80 frames)
    paper     the paper's sizes, for one GPU: 112 x 112 crops, MMA with ResNet-18's widths
              and depth, Hume-like videos at 30 frames a second, T = 480 frames, batch 4, a
              1-layer GRU of 128 units, FC 32

The lessons and ``python -m mmarnn_min.ablate`` take their data and networks from here too
(``ablation_data``), so every number in the docs traces back to one of these.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from mmarnn_min.checks import ConfigError, at_least, one_of
from mmarnn_min.cli_config import config_from_dict, describe_field
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.errors import UserError
from mmarnn_min.mma import MMAConfig
from mmarnn_min.mrnn import MRNNConfig
from mmarnn_min.stages.e2e import E2ETrainConfig
from mmarnn_min.stages.mma import MMATrainConfig
from mmarnn_min.stages.mrnn import MRNNTrainConfig
from mmarnn_min.video_faces import DETECTORS, make_detector


@dataclass
class PipelineConfig:
    data: SynthConfig = field(default_factory=lambda: SynthConfig.hume(5.0, train_images_per_source=4000, eval_videos=300))
    mma: MMATrainConfig = field(default_factory=MMATrainConfig)
    mrnn: MRNNTrainConfig = field(default_factory=lambda: MRNNTrainConfig(model=MRNNConfig(max_frames=80)))
    e2e: E2ETrainConfig = field(default_factory=E2ETrainConfig)
    seed: int = 0                    # training seed (initialisation, shuffling)
    amp: bool = False                # train in bfloat16 autocast (for a GPU; on a CPU without bfloat16 units it is slower)
    oracle: bool = True              # on SynthAffect, also train the MRNN on the true per-frame affect (the ceiling)
    features_batch_size: int = 512   # frames per forward pass of the frozen MMA
    hume: str = ""                   # Hume-Reaction root (MuSe 2022 or ABAW5 layout): its videos replace SynthAffect's
    detector: Literal["auto", "landmarks", "haar", "mtcnn", "retinaface"] = "auto"  # face detector for --hume videos
    retinaface_weights: str = ""     # local RetinaFace weights file for --detector retinaface
    stride: int = 1                  # read every stride-th frame of --hume videos
    affwild2: str = ""               # Aff-Wild2 root: its annotated frames join MMA's training images
    affwild2_every: int = 10         # keep every n-th Aff-Wild2 frame (neighbouring frames are near copies)
    affectnet: str = ""              # AffectNet root (either release): joins MMA's training images
    emotionet: str = ""              # EmotioNet label CSV: joins MMA's training images
    emotionet_images: str = ""       # the folder holding the EmotioNet images the CSV names
    synth_images: bool = True        # with real image sets given, train MMA on SynthAffect's images as well

    def __post_init__(self) -> None:
        at_least(self, "seed", 0)
        at_least(self, "features_batch_size", 1)
        at_least(self, "stride", 1)
        at_least(self, "affwild2_every", 1)
        one_of(self, "detector", DETECTORS)

    @property
    def real_images(self) -> bool:
        return bool(self.affwild2 or self.affectnet or self.emotionet)


def tiny() -> PipelineConfig:
    """Seconds on a CPU: for tests and for trying the commands."""
    return PipelineConfig(
        data=SynthConfig(train_images_per_source=48, eval_images_per_source=16, train_videos=24, eval_videos=12,
                         min_frames=8, max_frames=16, image_size=24, canvas_size=48),
        mma=MMATrainConfig(model=MMAConfig.tiny(), epochs=2, batch_size=32),
        mrnn=MRNNTrainConfig(model=MRNNConfig(hidden_size=16, routed_size=8, max_frames=16), epochs=2, batch_size=8),
        e2e=E2ETrainConfig(epochs=1, batch_size=8),
    )


def default() -> PipelineConfig:
    """The first command: a few minutes on a laptop CPU. 64 x 64 crops, 4,000 training images per
    source; 1,000 training and 300 validation and test videos like Hume-Reaction's (3-16 s, mean
    11 s) at 5 frames a second, so 15-80 frames, T = 80 (every field's default; the choices and
    their measurements: docs/experiments.md)."""
    return PipelineConfig()


def paper() -> PipelineConfig:
    """The paper's sizes, for one GPU: 112 x 112 crops, MMA with ResNet-18's widths, depth and
    global pool, T = 480, batch 4, a 1-layer GRU of 128 units, FC 32. The learning rates are
    Adam's usual ones: the paper's exact values are not published."""
    return PipelineConfig(
        data=SynthConfig.hume(30.0, image_size=112, canvas_size=256),
        mma=MMATrainConfig(model=MMAConfig.paper(), epochs=10, batch_size=64, lr=1e-3),
        mrnn=MRNNTrainConfig(model=MRNNConfig(hidden_size=128, num_layers=1, routed_size=32, max_frames=480),
                             epochs=20, batch_size=4, lr=1e-3),
        e2e=E2ETrainConfig(epochs=2, batch_size=4, mma_lr=1e-4, mrnn_lr=1e-4),
    )


PRESETS: dict[str, Callable[[], PipelineConfig]] = {"tiny": tiny, "default": default, "paper": paper}


def preset(name: str) -> PipelineConfig:
    """The preset called ``name`` (tiny, default or paper)."""
    if name not in PRESETS:
        raise UserError(f"no preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def ablation_data(name: str = "default") -> SynthConfig:
    """The videos of ``python -m mmarnn_min.ablate``: the preset's, with at least 300 validation
    and 300 test videos, so that the variants' differences stand out of the noise."""
    data = preset(name).data
    return replace(data, eval_videos=max(data.eval_videos, 300))


def check_pipeline(config: PipelineConfig) -> None:
    """What no single section of the config can check alone, before anything runs: every path
    given exists, the face detector asked for is installed, and SynthAffect's longest video
    fits the MRNN (a fixed-length variant crops)."""
    for name, kind in (("hume", "dir"), ("affectnet", "dir"), ("affwild2", "dir"), ("emotionet", "file"),
                       ("emotionet_images", "dir"), ("retinaface_weights", "file")):
        value = getattr(config, name)
        if value and not (Path(value).is_dir() if kind == "dir" else Path(value).is_file()):
            raise ConfigError(describe_field((name,)), f"no such {'directory' if kind == 'dir' else 'file'}: {value}")
    if config.hume and config.detector in ("haar", "mtcnn", "retinaface"):
        make_detector(config.detector, Path(config.hume), config.retinaface_weights or None)  # installed? (one line if not)
    longest, reads = config.data.max_frames, config.mrnn.model.max_frames
    if not config.hume and not config.mrnn.variant.fixed_length and longest > reads:
        raise ConfigError(describe_field(("mrnn", "model", "max_frames")),
                          f"SynthAffect's videos have up to data.max_frames = {longest} frames but the MRNN reads "
                          f"at most {reads}: raise it to {longest} or more, or lower --data-max-frames")


def load_config(name: str) -> PipelineConfig:
    """A preset by name, or a JSON file such as a run's ``config.json``."""
    if name in PRESETS:
        return preset(name)
    path = Path(name)
    if not path.is_file():
        raise UserError(f"--config {name}: neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--config {path}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"--config {path}:{error.lineno}: not valid JSON ({error.msg})") from None
    return config_from_dict(PipelineConfig, data)

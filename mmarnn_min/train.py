"""``python -m mmarnn_min.train STAGE [flags]``: the training stages of DESIGN section 1.

Each stage is a subcommand. Its flags are generated from its config dataclass: every field,
nested dataclasses included, becomes ``--field-name`` with the field's type, default and
trailing comment as help. Every stage also takes:

    --config FILE   start from this JSON config (as the run writes to OUT/config.json)
    --out DIR       where checkpoints, metrics and the config go (default: runs/latest)
    --device DEV    auto (CUDA when available) | cpu | cuda | cuda:N
    --seed N        the training seed (initialisation and shuffling)
    --threads N     CPU threads for PyTorch (default: its own choice, one per core). On a
                    machine that other jobs share, 1 can be many times faster: each of the
                    thousands of small parallel regions per step waits for every thread
                    (measured for stage mrnn on 2 shared cores: 37 s with 1 thread, 236 s with 2)
    --resume        continue the run in --out: its config.json is the starting config

Flags given on the command line override the config they start from.

Stages: ``mma`` (paper section 3.1) trains the multi-task CNN on SynthAffect's images into
OUT/mma; ``features`` runs it frozen over every video into OUT/features; ``mrnn`` (section
3.2) trains MRNN on planted-signal sequences or on SynthAffect's oracle features
(``--source oracle``). A flag whose name another flag already has is prefixed by its parent
(``--data-seed`` for the data set's seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from mmarnn_min.data.planted import PlantedConfig, planted_splits
from mmarnn_min.data.sequences import oracle_sequences
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.stages import resolve_device, write_json
from mmarnn_min.stages.features import run_features
from mmarnn_min.stages.mma import MMATrainConfig, train_mma
from mmarnn_min.stages.mrnn import MRNNTrainConfig, train_mrnn


@dataclass
class MRNNStageConfig:
    source: Literal["planted", "oracle"] = "planted"  # planted signal | SynthAffect's oracle features (sized by --num-train, --num-val, --data-seed)
    train: MRNNTrainConfig = field(default_factory=MRNNTrainConfig)
    data: PlantedConfig = field(default_factory=PlantedConfig)


def run_mrnn(config: MRNNStageConfig, out: Path, device: str, seed: int, resume: bool) -> dict:
    model, data = config.train.model, config.data
    if config.source == "planted":
        train_set, val_set = planted_splits(data, model.max_frames, features=model.input_size)
    else:
        synth = SynthConfig(seed=data.data_seed, train_videos=data.num_train, eval_videos=data.num_val)
        train_set, val_set = oracle_sequences(synth, "train"), oracle_sequences(synth, "val")
    results = train_mrnn(config.train, train_set, val_set, out, device=resolve_device(device), seed=seed, resume=resume)
    print(f"mrnn: best validation Pearson {results['val_pearson_mean']:.4f} (epoch {results['best_epoch']}): "
          + ", ".join(f"{name} {r:.3f}" for name, r in results["val_pearson"].items()))
    print(f"mrnn: wrote {out / 'metrics.json'}, {out / 'best.pt'}, {out / 'last.pt'}")
    return results


@dataclass
class MMAStageConfig:
    train: MMATrainConfig = field(default_factory=MMATrainConfig)
    data: SynthConfig = field(default_factory=SynthConfig)


def run_mma(config: MMAStageConfig, out: Path, device: str, seed: int, resume: bool) -> dict:
    """Stage ``mma`` (paper section 3.1): the multi-task CNN on SynthAffect's three image sources."""
    return train_mma(config.train, config.data, out / "mma", resolve_device(device), seed, resume)


@dataclass
class FeaturesStageConfig:
    data: SynthConfig = field(default_factory=SynthConfig)  # must equal the one stage mma trained on
    batch_size: int = 512  # frames per forward pass of the frozen MMA


def run_features_stage(config: FeaturesStageConfig, out: Path, device: str, seed: int, resume: bool) -> dict:
    """Stage ``features``: the frozen MMA (OUT/mma/best.pt) over every video, cached per split."""
    checkpoint = out / "mma" / "best.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(f"stage features needs a trained MMA at {checkpoint}: run stage mma with --out {out}")
    paths = run_features(config.data, checkpoint, out / "features", resolve_device(device), batch_size=config.batch_size)
    return {split: str(path) for split, path in paths.items()}


# stage name -> (config dataclass, runner, one-line description)
STAGES: dict[str, tuple[type, Callable[..., dict], str]] = {
    "mma": (MMAStageConfig, run_mma, "train MMA (residual multi-task CNN) on SynthAffect's images"),
    "features": (FeaturesStageConfig, run_features_stage, "cache the frozen MMA's per-frame features of every video"),
    "mrnn": (MRNNStageConfig, run_mrnn, "train MRNN (GRU + masked routing) on per-frame feature sequences"),
}


# ---- config dataclass <-> flags and JSON ---------------------------------------------------

def leaf_fields(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dataclasses.Field, Any]]:
    """(path, field, type) of every non-dataclass field of ``cls``, nested ones flattened."""
    hints = typing.get_type_hints(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            leaves += leaf_fields(hints[f.name], prefix + (f.name,))
        else:
            leaves.append((prefix + (f.name,), f, hints[f.name]))
    return leaves


def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment that ends its line in the class source."""
    pattern = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
    return {m.group(1): m.group(2).strip() for m in map(pattern.match, inspect.getsource(cls).splitlines()) if m}


def get_path(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


COMMON_FLAGS = {"config", "out", "device", "seed", "threads", "resume"}  # every stage's own flags


def flag_name(path: tuple[str, ...], taken: set[str]) -> str:
    """``--field-name``, or ``--parent-field-name`` when the leaf's name is already a flag
    (e.g. SynthConfig's ``seed`` becomes ``--data-seed`` beside the training ``--seed``)."""
    name = path[-1] if path[-1] not in taken else "_".join(path)
    if name in taken:
        raise ValueError(f"two config fields give the flag --{name}: flags must be unique")
    return name


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--name`` per leaf field of ``cls``; a flag not given leaves no attribute."""
    defaults = cls()
    taken = set(COMMON_FLAGS)
    for path, f, kind in leaf_fields(cls):
        name = flag_name(path, taken)
        taken.add(name)
        owner = get_path(defaults, path[:-1])
        comment = field_comments(type(owner)).get(f.name, "")
        options: dict[str, Any] = dict(dest=".".join(path), default=argparse.SUPPRESS,
                                       help=f"{comment} (default: {getattr(owner, f.name)!r})".replace("%", "%%"))
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            choices = typing.get_args(kind)
            options.update(choices=choices, type=type(choices[0]))
        else:
            options.update(type=kind, metavar=kind.__name__.upper())
        parser.add_argument("--" + name.replace("_", "-"), **options)


def config_from_dict(cls: type, data: dict) -> Any:
    """Build the dataclass ``cls`` from nested dicts (missing keys keep their defaults)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return cls(**{name: config_from_dict(hints[name], value) if dataclasses.is_dataclass(hints[name]) else value
                  for name, value in data.items()})


def set_path(data: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value


# ---- the command line ---------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmarnn_min.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, (cls, _, description) in STAGES.items():
        sub = stages.add_parser(name, help=description, description=description)
        sub.add_argument("--config", type=Path, help="JSON config to start from (e.g. a run's config.json)")
        sub.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory (default: runs/latest)")
        sub.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
        sub.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
        sub.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: one per core)")
        sub.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        add_config_flags(sub, cls)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = vars(build_parser().parse_args(argv))
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    cls, run, _ = STAGES[args["stage"]]
    data = {}
    if args["config"] is not None:
        data = json.loads(args["config"].read_text())
    elif args["resume"] and (args["out"] / "config.json").exists():
        data = json.loads((args["out"] / "config.json").read_text())
    for path, _, _ in leaf_fields(cls):
        if ".".join(path) in args:
            set_path(data, path, args[".".join(path)])
    config = config_from_dict(cls, data)
    write_json(dataclasses.asdict(config), args["out"] / "config.json")
    return run(config, args["out"], args["device"], args["seed"], args["resume"])


if __name__ == "__main__":
    main(sys.argv[1:])

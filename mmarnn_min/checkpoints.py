"""Saving and restoring the trained networks and a stage's training state.

A training run writes, per stage, ``best.pt`` (the model of the best validation epoch, with
its config: what ``predict`` and the later stages read) and ``last.pt`` (everything needed
to resume: models, optimizers, random generators and the results so far). Every file is
written atomically (``mmarnn_min.files``); a file that cannot be read (truncated, corrupt,
not a checkpoint) is a ``CheckpointError`` naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from mmarnn_min.errors import UserError
from mmarnn_min.files import save_torch
from mmarnn_min.mma import MMA, MMAConfig
from mmarnn_min.mrnn import MRNN, MRNNConfig
from mmarnn_min.mrnn_variants import MRNNVariant, build_mrnn


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or not what the caller needs."""


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu", needs: tuple[str, ...] = ()) -> dict:
    """The dict saved at ``path`` (tensors on ``device``). Raises CheckpointError when the file
    is missing, cannot be unpickled (truncated or corrupt) or lacks one of the keys ``needs``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path} cannot be read as a checkpoint (truncated or corrupt?): "
                              f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
    missing = [key for key in needs if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not the checkpoint expected here: it lacks {', '.join(missing)}")
    return state


def restore_mma(state_dict: dict, config: dict, device: str | torch.device = "cpu") -> MMA:
    """An MMA of ``config`` (an MMAConfig as a dict) holding ``state_dict``, in eval mode, on
    ``device``. A config without ``grid`` comes from before the grid existed: global pool."""
    model = MMA(MMAConfig(**{"grid": 1, **config})).to(device, memory_format=torch.channels_last)
    model.load_state_dict(state_dict)
    return model.eval()


def restore_mrnn(state_dict: dict, config: dict, variant: dict | None = None,
                 device: str | torch.device = "cpu") -> MRNN:
    """An MRNN of ``config`` (an MRNNConfig as a dict) and ``variant`` (an MRNNVariant as a
    dict; None: the paper's), holding ``state_dict``, in eval mode, on ``device``. A config that
    still holds the variant's fields (written before the variants had their own dataclass) is
    split in two."""
    variant_fields = {f.name for f in dataclasses.fields(MRNNVariant)}
    variant = {**{key: value for key, value in config.items() if key in variant_fields}, **(variant or {})}
    config = {key: value for key, value in config.items() if key not in variant_fields}
    model = build_mrnn(MRNNConfig(**config), MRNNVariant(**variant)).to(device)
    model.load_state_dict(state_dict)
    return model.eval()


def load_mma(path: str | Path, device: str | torch.device = "cpu") -> MMA:
    """The model of a ``best.pt`` of stage mma, in eval mode, on ``device``."""
    state = read_checkpoint(path, device, needs=("model", "config"))
    return restore_mma(state["model"], state["config"], device)


def load_mrnn(path: str | Path, device: str | torch.device = "cpu") -> MRNN:
    """The model of a ``best.pt`` of stage mrnn, in eval mode, on ``device``."""
    state = read_checkpoint(path, device, needs=("model", "config"))
    return restore_mrnn(state["model"], state["config"], state.get("variant"), device)


@dataclass
class TrainedPipeline:
    """The two trained networks of a run, in eval mode, and what they were trained on."""

    mma: MMA
    mrnn: MRNN
    image_size: int             # S, the side of the crops the MMA was trained on
    source: tuple[Path, ...]    # the checkpoint file(s) read: (e2e,) or (mma, mrnn)


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu", e2e: bool = True) -> TrainedPipeline:
    """The networks of the training run in ``run_dir``: ``e2e/best.pt`` when the end-to-end
    stage ran (and ``e2e``), else ``mma/best.pt`` and ``mrnn/best.pt``. A missing file is a
    CheckpointError naming it and the command that writes it."""
    run_dir = Path(run_dir)
    e2e_path = run_dir / "e2e" / "best.pt"
    if e2e and e2e_path.is_file():
        both = read_checkpoint(e2e_path, device, needs=("mma", "mma_config", "mrnn", "mrnn_config", "image_size"))
        return TrainedPipeline(restore_mma(both["mma"], both["mma_config"], device),
                               restore_mrnn(both["mrnn"], both["mrnn_config"], both.get("mrnn_variant"), device),
                               int(both["image_size"]), (e2e_path,))
    mma_path, mrnn_path = run_dir / "mma" / "best.pt", run_dir / "mrnn" / "best.pt"
    for path in (mma_path, mrnn_path):
        if not path.is_file():
            raise CheckpointError(f"no trained model at {path}: train one with "
                                  f"`python -m mmarnn_min.train --out {run_dir}`")
    mma = read_checkpoint(mma_path, device, needs=("model", "config", "image_size"))
    mrnn = read_checkpoint(mrnn_path, device, needs=("model", "config"))
    if None not in (mma.get("run_id"), mrnn.get("run_id")) and mma["run_id"] != mrnn["run_id"]:
        raise CheckpointError(f"{mma_path} and {mrnn_path} come from different training runs (run ids "
                              f"{mma['run_id'][:8]} and {mrnn['run_id'][:8]}): the MRNN was trained on another MMA's "
                              f"features. Use the two networks of one run")
    return TrainedPipeline(restore_mma(mma["model"], mma["config"], device),
                           restore_mrnn(mrnn["model"], mrnn["config"], mrnn.get("variant"), device),
                           int(mma["image_size"]), (mma_path, mrnn_path))


def save_training_state(path: Path, results: dict, **parts) -> None:
    """A stage's ``last.pt``: the state of every part (models, optimizers, random generators),
    under its keyword's name, and the results so far, atomically."""
    state = {name: part.get_state() if isinstance(part, torch.Generator) else part.state_dict()
             for name, part in parts.items()}
    save_torch(state | {"results": results}, path)


def load_training_state(path: Path, device: str | torch.device, **parts) -> dict:
    """Restore every part from a file of ``save_training_state`` (the same keywords); return
    its results. Generator states stay on the CPU, where torch.Generator wants them."""
    checkpoint = read_checkpoint(path, device, needs=(*parts, "results"))
    for name, part in parts.items():
        if isinstance(part, torch.Generator):
            part.set_state(checkpoint[name].cpu())
        else:
            part.load_state_dict(checkpoint[name])
    return checkpoint["results"]

"""``python -m mmarnn_min.ablate``: the paper's MRNN ablations (section 4) on SynthAffect, in one
command and one table (the variants themselves: ``mmarnn_min.mrnn_variants``).

Every variant is the paper's MRNN with one thing changed, trained on the same videos with
several seeds (mean and spread over seeds, test split):

    masked routing (paper)          GRU, masked routing over each video's real frames, Pearson loss
    fixed length: crop / repeat     every video cropped or stretched to ``fixed_frames`` (the usual
                                    strategy of public attempts at this task), then a plain FC
    zero padding, no mask           padded to T with zero frames, all T outputs into a plain FC
    MSE loss                        mean squared error instead of the Pearson loss
    VA / expressions / AUs only, and each pair: the MRNN reads only those parts of z
    LSTM instead of GRU

The input z is SynthAffect's true per-frame affect by default (``--source oracle``: no MMA
needed, so the ablation isolates the MRNN), or the cached MMA features of a training run
(``--source features --run DIR``). Results go to OUT (default runs/ablation): one directory
per variant and seed (a killed run resumes: finished ones are kept), ``ablation.json`` and
``ablation.md``. The paper's orderings are checked and printed as holding or not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mmarnn_min import cli
from mmarnn_min.checkpoints import load_mrnn
from mmarnn_min.checks import ConfigError, at_least, one_of
from mmarnn_min.cli_config import add_config_flags, apply_flags
from mmarnn_min.config import ablation_data, preset
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.files import write_json
from mmarnn_min.rundir import OutputDirectory
from mmarnn_min.runtime import resolve_device, set_threads
from mmarnn_min.stages.features import load_run_features
from mmarnn_min.stages.mrnn import MRNNTrainConfig, evaluate, train_mrnn
from mmarnn_min.tables import format_table

PAPER = "paper"
VARIANTS: dict[str, tuple[str, dict]] = {   # key -> (label, changes to MRNNVariant; "loss": to MRNNTrainConfig)
    PAPER: ("masked routing (paper)", {}),
    "fixed": ("fixed length: crop / repeat", {"sequence": "fixed"}),
    "padded": ("zero padding, no mask", {"sequence": "padded"}),
    "mse": ("MSE loss", {"loss": "mse"}),
    "va": ("VA only", {"inputs": "va"}),
    "expr": ("expressions only", {"inputs": "expr"}),
    "au": ("AUs only", {"inputs": "au"}),
    "va+expr": ("VA + expressions", {"inputs": "va,expr"}),
    "va+au": ("VA + AUs", {"inputs": "va,au"}),
    "expr+au": ("expressions + AUs", {"inputs": "expr,au"}),
    "lstm": ("LSTM instead of GRU", {"rnn": "lstm"}),
}
# The paper's orderings: (claim, variant that should score higher, variants it should beat)
ORDERINGS: list[tuple[str, str, tuple[str, ...]]] = [
    ("mask > fixed length", PAPER, ("fixed",)),
    ("mask > no mask", PAPER, ("padded",)),
    ("Pearson loss >= MSE", PAPER, ("mse",)),
    ("all three > any single task", PAPER, ("va", "expr", "au")),
    ("all three > any pair", PAPER, ("va+expr", "va+au", "expr+au")),
]


@dataclass
class AblationConfig:
    source: Literal["oracle", "features"] = "oracle"  # MRNN input: SynthAffect's true per-frame affect, or a run's MMA features
    run: str = "runs/latest"       # the training run whose cached features --source features reads
    seeds: int = 3                 # seeds per variant
    variants: str = ""             # comma-separated subset of: paper, fixed, padded, mse, va, expr, au, va+expr, va+au, expr+au, lstm (default: all)
    data: SynthConfig = field(default_factory=ablation_data)
    mrnn: MRNNTrainConfig = field(default_factory=lambda: preset("default").mrnn)

    def __post_init__(self) -> None:
        one_of(self, "source", ("oracle", "features"))
        at_least(self, "seeds", 1)
        unknown = [name for name in self.variant_names if name not in VARIANTS]
        if unknown:
            raise ConfigError("variants", f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")

    @property
    def variant_names(self) -> list[str]:
        return [name.strip() for name in self.variants.split(",") if name.strip()] or list(VARIANTS)


def variant_config(base: MRNNTrainConfig, changes: dict) -> MRNNTrainConfig:
    variant_changes = {key: value for key, value in changes.items() if key != "loss"}
    config = replace(base, variant=replace(base.variant, **variant_changes))
    return replace(config, loss=changes["loss"]) if "loss" in changes else config


def load_splits(config: AblationConfig) -> dict[str, SequenceDataset]:
    if config.source == "oracle":
        return {split: oracle_sequences(config.data, split) for split in ("train", "val", "test")}
    return load_run_features(Path(config.run))


def run_variant(config: MRNNTrainConfig, splits: dict[str, SequenceDataset], out_dir: Path, device: torch.device,
                seed: int) -> dict:
    """Train one variant with one seed (or read its finished result) -> test Pearson and seconds."""
    done = out_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    results = train_mrnn(config, splits["train"], splits["val"], out_dir, device, seed, resume=True, log=lambda _: None)
    model = load_mrnn(out_dir / "best.pt", device)
    test = evaluate(model, splits["test"], device)
    result = {"test_pearson_mean": test["pearson_mean"], "test_pearson": test["pearson"],
              "seconds": results["history"][-1]["seconds"]}
    write_json(result, done)
    return result


def run_name(config: AblationConfig, variant: MRNNTrainConfig, name: str) -> str:
    """The variant's number and a hash of everything its result depends on: a finished result
    is reused only for the same data and training config."""
    inputs = {"variant": dataclasses.asdict(variant), "source": config.source,
              "data": dataclasses.asdict(config.data) if config.source == "oracle" else str(Path(config.run).resolve())}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:10]
    return f"{list(VARIANTS).index(name):02d}-{digest}"


def run_ablation(config: AblationConfig, splits: dict[str, SequenceDataset], out: Path, device: torch.device) -> dict:
    names = config.variant_names
    table = {}
    started = time.perf_counter()
    for number, name in enumerate(names, 1):
        variant = variant_config(config.mrnn, VARIANTS[name][1])
        runs = [run_variant(variant, splits, out / run_name(config, variant, name) / f"seed{seed}", device, seed)
                for seed in range(config.seeds)]
        scores = np.array([run["test_pearson_mean"] for run in runs])
        table[name] = {"pearson_mean": float(scores.mean()), "pearson_std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
                       "per_seed": scores.tolist(), "seconds": float(sum(run["seconds"] for run in runs))}
        elapsed = time.perf_counter() - started
        print(f"ablation {number}/{len(names)} {VARIANTS[name][0]}: Pearson {scores.mean():.4f} +- {table[name]['pearson_std']:.4f}"
              f"  ({elapsed:.0f} s, ETA {elapsed / number * (len(names) - number):.0f} s)", flush=True)
    return table


def check_orderings(table: dict) -> list[tuple[str, bool | None]]:
    """Each ordering of the paper: True (holds in the means), False, or None (not run)."""
    verdicts = []
    for claim, better, others in ORDERINGS:
        if better not in table or any(other not in table for other in others):
            verdicts.append((claim, None))
        else:
            verdicts.append((claim, all(table[better]["pearson_mean"] >= table[o]["pearson_mean"] for o in others)))
    return verdicts


def format_ablation(table: dict, config: AblationConfig) -> str:
    paper = table.get(PAPER, {}).get("pearson_mean")
    rows = [[VARIANTS[name][0], row["pearson_mean"], row["pearson_std"],
             "" if paper is None or name == PAPER else f"{row['pearson_mean'] - paper:+.4f}", round(row["seconds"])]
            for name, row in table.items()]
    lines = [f"MRNN ablations on {config.source} inputs, test Pearson (mean of 7 reactions), "
             f"{config.seeds} seed(s): mean and standard deviation",
             format_table(["variant", "Pearson", "std", "vs paper", "train s"], rows), ""]
    for (claim, better, others), (_, holds) in zip(ORDERINGS, check_orderings(table)):
        if holds is None:
            continue
        margin = min(table[better]["pearson_mean"] - table[other]["pearson_mean"] for other in others)
        spread = max(table[name]["pearson_std"] for name in (better, *others))
        verdict = "does NOT hold" if not holds else "holds" if margin > spread else \
            "holds, but by less than the spread over seeds"
        lines.append(f"{claim}: {verdict} (margin {margin:+.4f}, largest std {spread:.4f})")
    return "\n".join(lines)


class AblationDirectory(OutputDirectory):
    kind = "ablation"

    def owns(self, name: str) -> bool:  # its summaries and one directory per variant ("03-1a2b3c4d5e")
        return name in ("config.json", "ablation.json", "ablation.md") or name[:3].rstrip("-").isdigit() \
            or super().owns(name)


def main(argv: list[str] | None = None) -> dict:
    parser = cli.Parser("python -m mmarnn_min.ablate", __doc__)
    parser.add_argument("--out", type=cli.directory, default=Path("runs/ablation"), help="output directory (default: runs/ablation)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: one per core)")
    add_config_flags(parser, AblationConfig)
    args = vars(parser.parse_args(argv))
    config = apply_flags(AblationConfig(), args)
    device = resolve_device(args["device"])
    set_threads(args["threads"])
    out = AblationDirectory(args["out"])
    splits = load_splits(config)  # a run without cached features fails here, before anything is written
    with out.lock():
        write_json(dataclasses.asdict(config), out.path / "config.json")
        return report_ablation(config, run_ablation(config, splits, out.path, device), out.path)


def report_ablation(config: AblationConfig, table: dict, out: Path) -> dict:
    """Write ablation.json and ablation.md and print the table; returns the table."""
    text = format_ablation(table, config)
    write_json({"config": dataclasses.asdict(config), "variants": table,
                "orderings": dict(check_orderings(table))}, out / "ablation.json")
    (out / "ablation.md").write_text("```\n" + text + "\n```\n")
    print("\n" + text)
    return table


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.ablate"))

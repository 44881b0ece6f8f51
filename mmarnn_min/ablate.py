"""``python -m mmarnn_min.ablate``: the paper's MRNN ablations (section 4) on SynthAffect, in one
command and one table, with the paper's orderings tested by paired comparisons over seeds.

Every variant is the paper's MRNN with one thing changed (``mmarnn_min.mrnn_variants``),
trained on the same videos with several seeds, each to convergence (early stopping on the
validation Pearson); the table gives the test Pearson's mean and spread over seeds:

    masked routing (paper)       GRU, masked routing over each video's real frames, Pearson loss
    padding, no mask             every video zero-padded to T, all T outputs into a plain FC
    the fixed-length strategies of the public attempts at this task, N as they chose it
    (scaled from their 30 fps to the data's frame rate) and N = the mean video length:
        uniform sampling to N    N frames evenly spaced over the video
        truncate / zero-pad to N the first N frames, zero frames after the end
    summary + ridge              no RNN: each video's mean, max and std of every value, ridge
    MSE loss                     mean squared error instead of the Pearson loss
    LSTM instead of GRU
    VA / expressions / AUs only, and each pair: the MRNN reads only those parts of z

The input is SynthAffect's true per-frame affect by default (``--source oracle``: no MMA, so
the ablation isolates the MRNN), or the cached MMA features of a training run (``--source
features --run DIR``). Each ordering of the paper is tested seed by seed: the difference of
the two variants' test Pearson with the same seed, its mean and 95% confidence interval over
seeds (Student's t); it holds when the interval lies above 0, does not hold when it lies below,
and is not decided otherwise. Results go to OUT (default runs/ablation): one directory per
variant and seed (a killed run resumes: finished ones are kept), ``ablation.json`` and
``ablation.md``. ``--quick`` runs everything on a tiny data set in seconds (for the tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mmarnn_min import cli
from mmarnn_min.baselines import fit_summary_ridge
from mmarnn_min.cache import code_digest
from mmarnn_min.checkpoints import load_mrnn
from mmarnn_min.checks import ConfigError, at_least, one_of
from mmarnn_min.cli_config import add_config_flags, apply_flags
from mmarnn_min.config import ablation_data, preset
from mmarnn_min.data import synth_cache
from mmarnn_min.data.sequences import SequenceDataset, oracle_sequences
from mmarnn_min.data.synth_config import SynthConfig
from mmarnn_min.files import write_json
from mmarnn_min.metrics import pearson
from mmarnn_min.rundir import OutputDirectory
from mmarnn_min.runtime import resolve_device, set_threads
from mmarnn_min.stages.features import load_run_features
from mmarnn_min.stages.mrnn import MRNNTrainConfig, evaluate, train_mrnn
from mmarnn_min.tables import format_table, number

PAPER, SUMMARY = "paper", "summary"
PUBLIC_FPS = 30.0  # the frame rate the public entries' N refer to


@dataclass(frozen=True)
class Variant:
    label: str
    changes: dict  # to MRNNVariant, "loss" to MRNNTrainConfig; empty for the paper and the summary


def variants(data: SynthConfig) -> dict[str, Variant]:
    """Every variant, with N of the fixed-length ones set for ``data``'s frame rate and lengths."""
    def public(frames_at_30_fps: int) -> int:
        return max(1, round(frames_at_30_fps * data.fps / PUBLIC_FPS))

    mean = round(data.mean_seconds * data.fps) if data.video_mode == "hume" else (data.min_frames + data.max_frames) // 2
    return {
        PAPER: Variant("masked routing (paper)", {}),
        "padded": Variant("padding, no mask", {"sequence": "padded"}),
        "sample_public": Variant(f"uniform sampling to N={public(100)}", {"sequence": "sample", "fixed_frames": public(100)}),
        "sample_mean": Variant(f"uniform sampling to N={mean}", {"sequence": "sample", "fixed_frames": mean}),
        "truncate_public": Variant(f"truncate / zero-pad to N={public(30)}",
                                   {"sequence": "truncate", "fixed_frames": public(30)}),
        "truncate_mean": Variant(f"truncate / zero-pad to N={mean}", {"sequence": "truncate", "fixed_frames": mean}),
        SUMMARY: Variant("summary (mean, max, std) + ridge", {}),
        "mse": Variant("MSE loss", {"loss": "mse"}),
        "lstm": Variant("LSTM instead of GRU", {"rnn": "lstm"}),
        "va": Variant("VA only", {"inputs": "va"}),
        "expr": Variant("expressions only", {"inputs": "expr"}),
        "au": Variant("AUs only", {"inputs": "au"}),
        "va+expr": Variant("VA + expressions", {"inputs": "va,expr"}),
        "va+au": Variant("VA + AUs", {"inputs": "va,au"}),
        "expr+au": Variant("expressions + AUs", {"inputs": "expr,au"}),
    }


VARIANT_NAMES = tuple(variants(SynthConfig()))
FIXED_LENGTH = ("sample_public", "sample_mean", "truncate_public", "truncate_mean")
# The paper's orderings, and two comparisons it implies: (claim, the variant that should score
# higher, the variants it should beat)
ORDERINGS: list[tuple[str, str, tuple[str, ...]]] = [
    ("mask > padding without the mask", PAPER, ("padded",)),
    ("mask > every fixed-length strategy", PAPER, FIXED_LENGTH),
    ("Pearson loss > MSE", PAPER, ("mse",)),
    ("all three inputs > any single one", PAPER, ("va", "expr", "au")),
    ("all three inputs > any pair", PAPER, ("va+expr", "va+au", "expr+au")),
    ("GRU > LSTM", PAPER, ("lstm",)),
    ("MRNN > the summary baseline", PAPER, (SUMMARY,)),
]


@dataclass
class AblationConfig:
    source: Literal["oracle", "features"] = "oracle"  # MRNN input: SynthAffect's true per-frame affect, or a run's MMA features
    run: str = "runs/latest"       # the training run whose cached features --source features reads
    seeds: int = 3                 # seeds per variant (training seeds; the data stay the same)
    variants: str = ""             # comma-separated subset of: paper, padded, sample_public, sample_mean, truncate_public, truncate_mean, summary, mse, lstm, va, expr, au, va+expr, va+au, expr+au (default: all)
    data: SynthConfig = field(default_factory=ablation_data)
    mrnn: MRNNTrainConfig = field(default_factory=lambda: preset("default").mrnn)

    def __post_init__(self) -> None:
        one_of(self, "source", ("oracle", "features"))
        at_least(self, "seeds", 1)
        unknown = [name for name in self.variant_names if name not in VARIANT_NAMES]
        if unknown:
            raise ConfigError("variants", f"unknown variant(s) {', '.join(unknown)}: choose from "
                                          f"{', '.join(VARIANT_NAMES)}")

    @property
    def variant_names(self) -> list[str]:
        return [name.strip() for name in self.variants.split(",") if name.strip()] or list(VARIANT_NAMES)


def quick(config: AblationConfig) -> AblationConfig:
    """The same ablation on the tiny preset's data and networks, two seeds: seconds."""
    tiny = preset("tiny")
    return replace(config, seeds=2, data=replace(tiny.data, eval_videos=16),
                   mrnn=replace(tiny.mrnn, epochs=3, patience=0))


def variant_config(base: MRNNTrainConfig, changes: dict) -> MRNNTrainConfig:
    variant_changes = {key: value for key, value in changes.items() if key != "loss"}
    config = replace(base, variant=replace(base.variant, **variant_changes))
    return replace(config, loss=changes["loss"]) if "loss" in changes else config


def load_splits(config: AblationConfig) -> dict[str, SequenceDataset]:
    if config.source == "oracle":
        return {split: oracle_sequences(config.data, split) for split in ("train", "val", "test")}
    return load_run_features(Path(config.run))


def inputs_key(config: AblationConfig) -> dict:
    """What the ablation's inputs are, for the names of cached results: the videos' own cache key
    (their config and the generator's code) or the run's feature files (their names hash what
    made them)."""
    if config.source == "oracle":
        return {"oracle": synth_cache.cache_key(config.data)}
    return {"features": json.loads((Path(config.run) / "features" / "latest.json").read_text())}


def run_name(config: AblationConfig, variant: MRNNTrainConfig, name: str) -> str:
    """The variant's number and a hash of everything its result depends on (inputs, training
    config, the MRNN's code): a finished result is reused only when all of it is the same."""
    inputs = {"variant": dataclasses.asdict(variant), "inputs": inputs_key(config),
              "code": code_digest("mrnn.py", "mrnn_variants.py", "gru.py", "routing.py", "optim.py", "losses.py",
                                  "baselines.py", "stages/mrnn.py").hex()}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:10]
    return f"{VARIANT_NAMES.index(name):02d}-{digest}"


def run_variant(name: str, config: MRNNTrainConfig, splits: dict[str, SequenceDataset], out_dir: Path,
                device: torch.device, seed: int) -> dict:
    """One variant with one seed (or its finished result): test Pearson, epochs and seconds."""
    done = out_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    if name == SUMMARY:   # deterministic: the same for every seed
        predict, strength = fit_summary_ridge([z.numpy() for z in splits["train"].features], splits["train"].labels.numpy(),
                                              [z.numpy() for z in splits["val"].features], splits["val"].labels.numpy())
        per_reaction = pearson(predict([z.numpy() for z in splits["test"].features]), splits["test"].labels)
        result = {"test_pearson_mean": float(per_reaction.mean()), "epochs": 0, "ridge_strength": strength,
                  "seconds": time.perf_counter() - started}
    else:
        trained = train_mrnn(config, splits["train"], splits["val"], out_dir, device, seed, resume=True,
                             log=lambda _: None)
        test = evaluate(load_mrnn(out_dir / "best.pt", device), splits["test"], device)
        result = {"test_pearson_mean": test["pearson_mean"], "epochs": len(trained["history"]),
                  "best_epoch": trained["best_epoch"], "seconds": trained["history"][-1]["seconds"]}
    write_json(result, done)
    return result


def run_ablation(config: AblationConfig, splits: dict[str, SequenceDataset], out: Path, device: torch.device) -> dict:
    """Every variant of ``config`` with every seed -> {name: its label, per-seed Pearson, mean,
    std, epochs and seconds}."""
    table_of = variants(config.data)
    names = config.variant_names
    table = {}
    started = time.perf_counter()
    for number_done, name in enumerate(names, 1):
        variant = variant_config(config.mrnn, table_of[name].changes)
        runs = [run_variant(name, variant, splits, out / run_name(config, variant, name) / f"seed{seed}", device, seed)
                for seed in range(config.seeds)]
        scores = np.array([run["test_pearson_mean"] if run["test_pearson_mean"] is not None else math.nan
                           for run in runs])
        table[name] = {"label": table_of[name].label, "pearson": scores.tolist(), "pearson_mean": float(scores.mean()),
                       "pearson_std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
                       "epochs": [run["epochs"] for run in runs], "seconds": float(sum(run["seconds"] for run in runs))}
        elapsed = time.perf_counter() - started
        print(f"ablation {number_done}/{len(names)} {table_of[name].label}: Pearson {scores.mean():.4f} +- "
              f"{table[name]['pearson_std']:.4f}  ({elapsed:.0f} s, ETA {elapsed / number_done * (len(names) - number_done):.0f} s)",
              flush=True)
    return table


# Student's t at 97.5% for 1..30 degrees of freedom (two-sided 95% intervals)
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def paired(better: list[float], other: list[float]) -> dict:
    """The seed-by-seed differences better - other, their mean and 95% confidence interval, and
    whether the interval lies above 0 (True), below (False) or across it (None)."""
    differences = np.array(better) - np.array(other)
    mean = float(differences.mean())
    if len(differences) < 2:
        return {"differences": differences.tolist(), "mean": mean, "ci95": None, "holds": None}
    half = T_975[min(len(differences) - 1, len(T_975)) - 1] * differences.std(ddof=1) / math.sqrt(len(differences))
    low, high = mean - half, mean + half
    return {"differences": differences.tolist(), "mean": mean, "ci95": [low, high],
            "holds": True if low > 0 else False if high < 0 else None}


def check_orderings(table: dict) -> dict[str, dict]:
    """Each ordering whose variants all ran: the paired comparison against every variant it
    should beat, and its verdict: "holds" (against every one), "does not hold" (reversed
    against one), else "not decided"."""
    verdicts = {}
    for claim, better, others in ORDERINGS:
        if better not in table or any(other not in table for other in others):
            continue
        against = {other: paired(table[better]["pearson"], table[other]["pearson"]) for other in others}
        holds = [comparison["holds"] for comparison in against.values()]
        verdict = "holds" if all(h is True for h in holds) else "does not hold" if any(h is False for h in holds) \
            else "not decided"
        verdicts[claim] = {"better": better, "against": against, "verdict": verdict}
    return verdicts


def format_ablation(table: dict, orderings: dict, config: AblationConfig) -> str:
    paper = table.get(PAPER, {}).get("pearson_mean")
    rows = [[row["label"], row["pearson_mean"], row["pearson_std"],
             "" if paper is None or name == PAPER else f"{row['pearson_mean'] - paper:+.4f}",
             "/".join(map(str, row["epochs"])), round(row["seconds"])]
            for name, row in table.items()]
    lines = [f"MRNN ablations on {config.source} inputs ({config.data.train_videos} training, "
             f"{config.data.eval_videos} test videos), test Pearson (mean of 7 reactions) over {config.seeds} seed(s)",
             format_table(["variant", "Pearson", "std", "vs paper", "epochs", "train s"], rows), "",
             "orderings, paired over seeds (difference of test Pearson, mean [95% CI]):"]
    for claim, result in orderings.items():
        lines.append(f"{claim}: {result['verdict'].upper()}")
        for other, comparison in result["against"].items():
            interval = comparison["ci95"]
            shown = f"[{number(interval[0], '+.4f')}, {number(interval[1], '+.4f')}]" if interval else "(one seed)"
            lines.append(f"    vs {table[other]['label']}: {number(comparison['mean'], '+.4f')} {shown}")
    return "\n".join(lines)


class AblationDirectory(OutputDirectory):
    kind = "ablation"

    def owns(self, name: str) -> bool:  # its summaries and one directory per variant ("03-1a2b3c4d5e")
        return name in ("config.json", "ablation.json", "ablation.md") or name[:3].rstrip("-").isdigit() \
            or super().owns(name)


def main(argv: list[str] | None = None) -> dict:
    parser = cli.Parser("python -m mmarnn_min.ablate", __doc__)
    parser.add_argument("--out", type=cli.directory, default=Path("runs/ablation"),
                        help="output directory (default: runs/ablation)")
    parser.add_argument("--quick", action="store_true", help="the tiny preset's data and networks, 2 seeds: seconds")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: one per core)")
    add_config_flags(parser, AblationConfig)
    args = vars(parser.parse_args(argv))
    config = apply_flags(quick(AblationConfig()) if args["quick"] else AblationConfig(), args)
    device = resolve_device(args["device"])
    set_threads(args["threads"])
    out = AblationDirectory(args["out"])
    splits = load_splits(config)  # a run without cached features fails here, before anything is written
    with out.lock():
        write_json(dataclasses.asdict(config), out.path / "config.json")
        table = run_ablation(config, splits, out.path, device)
        orderings = check_orderings(table)
        text = format_ablation(table, orderings, config)
        write_json({"config": dataclasses.asdict(config), "threads": torch.get_num_threads(), "variants": table,
                    "orderings": orderings}, out.path / "ablation.json")
        (out.path / "ablation.md").write_text("```\n" + text + "\n```\n")
    print("\n" + text)
    return {"variants": table, "orderings": orderings}


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.ablate"))

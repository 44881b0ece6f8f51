"""MMA's ablation (paper section 4): the multi-task network trained without distribution
matching, and on each task alone. Training a task alone drops the other tasks' labels (they
then only appear in the evaluation) and L_DM, which couples two tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from mmarnn_min.data.synth import SynthConfig
from mmarnn_min.files import write_json
from mmarnn_min.stages.mma import MMATrainConfig, train_mma
from mmarnn_min.tables import format_table

ABLATIONS: dict[str, dict] = {       # variant -> changes to the config
    "all three + L_DM": {},
    "all three, no L_DM": {"dm_weight": 0.0},
    "VA alone": {"tasks": "va"},
    "expression alone": {"tasks": "expr"},
    "AUs alone": {"tasks": "au"},
}


def run_ablation(
    config: MMATrainConfig,
    synth_config: SynthConfig,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Train every variant of ``ABLATIONS`` (in ``out_dir/<n>``, resumable) and return each
    one's test metrics; ``format_ablation`` prints them as a table."""
    table = {}
    for index, (name, changes) in enumerate(ABLATIONS.items()):
        log(f"ablation {index + 1}/{len(ABLATIONS)}: {name}")
        results = train_mma(replace(config, **changes), synth_config, Path(out_dir) / str(index), device, seed,
                            resume=True, log=log)
        table[name] = results["test"] | {"seconds": results["history"][-1]["seconds"]}
    write_json(table, Path(out_dir) / "ablation.json")
    return table


def format_ablation(table: dict[str, dict]) -> str:
    header = ["variant", "VA CCC", "valence", "arousal", "expr F1", "AU F1", "train s"]
    rows = [[name, m["va_ccc_mean"], m["valence_ccc"], m["arousal_ccc"], m["expr_f1"], m["au_f1"], round(m["seconds"])]
            for name, m in table.items()]
    return format_table(header, rows)

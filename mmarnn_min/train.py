"""``python -m mmarnn_min.train [STAGE ...] [flags]``: the whole method, stage by stage, and
the report (the stages: ``mmarnn_min.pipeline``).

    mma       paper section 3.1: the multi-task CNN on face images (VA, expressions, AUs)
    features  the frozen MMA over every frame of every video, cached: z (L, 26) per video
    mrnn      paper section 3.2: GRU + masked routing + FC(32) + FC(7) on the cached z, with
              the Pearson loss; on SynthAffect also the oracle (the same MRNN on the true
              per-frame affect: the ceiling the report compares with)
    e2e       both networks fine-tuned together from pixels, from the weights above

With no stage, ``mma features mrnn`` run on the embedded SynthAffect data and the report is
printed and written to OUT/report.json and OUT/report.md (with plots when matplotlib is
installed). ``--resume`` continues a killed run where it stopped and ends as an unbroken run
would. A run directory is a unit of work (``mmarnn_min.rundir``): one process at a time, and
results already there are replaced only with ``--overwrite``. What a run writes into OUT:

    OUT/config.json   the full config of the run        OUT/mma/       MMA checkpoints, metrics
    OUT/features/     cached per-frame vectors          OUT/mrnn/      MRNN checkpoints, metrics
    OUT/oracle/       the oracle MRNN                   OUT/e2e/       the fine-tuned pair
    OUT/report.json, OUT/report.md, OUT/plots/

``--config tiny | default | paper | FILE.json`` picks the starting config (``mmarnn_min.config``);
every field is also a flag (``--mma-epochs``, ``--mrnn-hidden-size``, ``--data-train-videos``,
...: see ``--help``). Real data (formats: docs/data_formats.md): ``--hume ROOT`` replaces
SynthAffect's videos; ``--affwild2``, ``--affectnet``, ``--emotionet`` add image sets to MMA's
training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmarnn_min import cli
from mmarnn_min.cli_config import add_config_flags, apply_flags, config_from_dict
from mmarnn_min.config import PRESETS, PipelineConfig, check_pipeline, load_config
from mmarnn_min.pipeline import DEFAULT_STAGES, STAGES, check_real_data, run_stages
from mmarnn_min.rundir import RunDirectory
from mmarnn_min.runtime import resolve_device, set_threads


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser("python -m mmarnn_min.train", __doc__)
    parser.add_argument("stages", nargs="*", metavar="STAGE",
                        help=f"stages to run, in order: {', '.join(STAGES)} (default: {' '.join(DEFAULT_STAGES)})")
    parser.add_argument("--config", default=None,
                        help=f"starting config: {' | '.join(PRESETS)} | a JSON file such as a run's config.json "
                             "(default: OUT/config.json with --resume or when the first stage is not mma, else default)")
    parser.add_argument("--out", type=cli.directory, default=Path("runs/latest"), help="run directory (default: runs/latest)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for PyTorch (default: one per core; with fewer, SynthAffect's videos are "
                             "rendered on an idle core while stage mma trains)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results already in --out of the stages run (and of the later ones)")
    add_config_flags(parser, PipelineConfig)
    return parser


def starting_config(name: str | None, out: Path, continues: bool) -> PipelineConfig:
    """The preset or file ``name``; without one, the run's own OUT/config.json when this
    invocation ``continues`` it (--resume, or a first stage after mma), else the default."""
    if name is None:
        saved = RunDirectory(out).saved_config() if continues else None
        if saved is not None:
            print(f"config: {out / 'config.json'} (the run's own; --config picks another)")
            return config_from_dict(PipelineConfig, saved)
        name = "default"
    return load_config(name)


def main(argv: list[str] | None = None) -> dict:
    """Check everything (stages, config, device, threads, the run directory), then run. A
    mistake raises a UserError before anything is written."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    stages = args["stages"] or list(DEFAULT_STAGES)
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(STAGES)}")
    if stages != sorted(stages, key=list(STAGES).index) or len(set(stages)) != len(stages):
        parser.error(f"stages run once each, in their order: {' '.join(STAGES)}; got {' '.join(stages)}")
    if args["resume"] and args["overwrite"]:
        parser.error("--resume continues a run, --overwrite replaces it: choose one")
    out, resume = args["out"], args["resume"]
    RunDirectory(out)  # an empty --out, or a file, is refused here
    config = apply_flags(starting_config(args["config"], out, resume or stages[0] != "mma"), args)
    check_pipeline(config)
    check_real_data(config)
    device = resolve_device(args["device"])
    set_threads(args["threads"])
    return run_stages(config, stages, out, device, resume, args["overwrite"])


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.train"))

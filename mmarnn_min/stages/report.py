"""The report of a training run: what the stages measured, in one place.

``write_report(OUT)`` reads the metrics the stages wrote into OUT and writes

    OUT/report.json   pearson_mean (the trained pipeline's mean Pearson over the 7 reactions
                      on the test split: the paper's number), pearson per reaction,
                      oracle_pearson_mean (the same MRNN on SynthAffect's true per-frame
                      affect: the ceiling), fraction_of_oracle, the MMA metrics with their
                      chance levels, and the seconds each stage took
    OUT/report.md     the same as tables, for people
    OUT/plots/        losses.png (training curves) and predictions.png (predicted vs true
                      intensity per reaction), when matplotlib is installed

and prints the summary. A number a stage did not produce (no oracle on real data, no e2e
unless it ran) is left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmarnn_min.affect import REACTIONS
from mmarnn_min.files import replace_atomically, write_json
from mmarnn_min.tables import format_table, markdown_table, number


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def build_report(out: Path, data: str, seed: int | None = None, threads: int | None = None) -> dict:
    """The report's numbers from the metrics files in ``out``."""
    mma, mrnn, oracle, e2e = (read_json(out / name / "metrics.json") for name in ("mma", "mrnn", "oracle", "e2e"))
    timings = read_json(out / "timings.json") or {}
    report: dict = {"data": data, "seed": seed, "threads": threads}   # what reproduces it on one machine
    final = e2e if e2e and "test" in e2e else mrnn if mrnn and "test" in mrnn else None
    if final is not None:
        report.update(pipeline="mma + mrnn, fine-tuned end to end (e2e)" if final is e2e else "mma + mrnn",
                      split=final["test_split"], pearson_mean=final["test"]["pearson_mean"],
                      pearson=final["test"]["pearson"])
        report["mrnn_pearson_mean"] = mrnn["test"]["pearson_mean"]
        if final is e2e:
            report["e2e_pearson_mean"] = e2e["test"]["pearson_mean"]
    if oracle and "test" in oracle:
        report.update(oracle_pearson_mean=oracle["test"]["pearson_mean"], oracle_pearson=oracle["test"]["pearson"])
        pipeline, ceiling = report.get("pearson_mean"), report["oracle_pearson_mean"]
        if pipeline is not None and ceiling is not None and ceiling > 0:
            report["fraction_of_oracle"] = pipeline / ceiling
    if mma and "test" in mma:
        report["mma"] = {key: mma["test"][key] for key in ("va_ccc_mean", "valence_ccc", "arousal_ccc", "expr_f1", "au_f1")}
        report["mma_chance"] = mma["test_chance"]
    report["timings"] = timings | {"total": round(sum(timings.values()), 1)}
    return report


def format_report(report: dict) -> str:
    """The report as Markdown tables."""
    lines = [f"# mmarnn_min report: {report['data']}", "", f"Seed {report['seed']}, {report['threads']} CPU threads.", ""]
    if "pearson_mean" in report:
        rows = [["trained pipeline", report["pearson_mean"], *report["pearson"].values()]]
        if "oracle_pearson_mean" in report:
            rows.append(["oracle (true per-frame affect)", report["oracle_pearson_mean"], *report["oracle_pearson"].values()])
        lines += [f"## Reaction intensity, Pearson on the {report['split']} split ({report['pipeline']})", "",
                  markdown_table(["", "mean", *REACTIONS], rows), ""]
        if "fraction_of_oracle" in report:
            lines += [f"The trained pipeline reaches **{report['fraction_of_oracle']:.0%}** of the oracle's Pearson.", ""]
        if "e2e_pearson_mean" in report:
            lines += [f"Before the end-to-end fine-tuning: {number(report['mrnn_pearson_mean'])}.", ""]
        lines += [UNDEFINED_NOTE, ""] if has_undefined(report) else []
        lines += [WITHHELD_NOTE, ""] if report["split"] != "test" else []
    if "mma" in report:
        mma, chance = report["mma"], report["mma_chance"]
        lines += ["## MMA on the test images", "",
                  markdown_table(["", "VA CCC", "valence CCC", "arousal CCC", "expression F1", "AU F1"],
                                 [["MMA", mma["va_ccc_mean"], mma["valence_ccc"], mma["arousal_ccc"], mma["expr_f1"], mma["au_f1"]],
                                  ["chance", chance["va_ccc_mean"], "", "", chance["expr_f1"], chance["au_f1"]]]), ""]
    lines += ["## Seconds per stage", "",
              markdown_table(list(report["timings"]), [[f"{seconds:.0f}" for seconds in report["timings"].values()]]), ""]
    return "\n".join(lines)


UNDEFINED_NOTE = ("undefined: a Pearson correlation with a constant column (the model predicted the same "
                  "intensity for every video, or the labels do not vary): no number measures it")


WITHHELD_NOTE = ("the test split's labels are withheld: these numbers are on the validation split; the test "
                 "predictions are in mrnn/test_predictions.npz")


def has_undefined(report: dict) -> bool:
    values = [report.get("pearson_mean"), *report.get("pearson", {}).values()]
    return any(value is None or value != value for value in values)


def summary(report: dict) -> str:
    """The few lines printed at the end of a run."""
    lines = []
    if "pearson_mean" in report:
        header = ["", "mean", *(name[:8] for name in REACTIONS)]
        rows = [["pipeline", report["pearson_mean"], *report["pearson"].values()]]
        if "oracle_pearson_mean" in report:
            rows.append(["oracle", report["oracle_pearson_mean"], *report["oracle_pearson"].values()])
        lines += [f"Pearson on the {report['split']} split of {report['data']} (seed {report['seed']}, "
                  f"{report['threads']} CPU threads):", format_table(header, rows)]
        if "fraction_of_oracle" in report:
            lines.append(f"the trained pipeline reaches {report['fraction_of_oracle']:.0%} of the oracle's Pearson")
        if has_undefined(report):
            lines.append(UNDEFINED_NOTE)
        if report["split"] != "test":
            lines.append(WITHHELD_NOTE)
    if "mma" in report:
        mma, chance = report["mma"], report["mma_chance"]
        lines.append(f"MMA (test images): VA CCC {number(mma['va_ccc_mean'], '.3f')}, expression F1 "
                     f"{number(mma['expr_f1'], '.3f')} (chance {number(chance['expr_f1'], '.3f')}), AU F1 "
                     f"{number(mma['au_f1'], '.3f')} (chance {number(chance['au_f1'], '.3f')})")
    lines.append("seconds: " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in report["timings"].items()))
    return "\n".join(lines)


def write_plots(out: Path) -> list[Path]:
    """losses.png and predictions.png in ``out/plots``; nothing without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    written = []

    curves = {name: read_json(out / name / "metrics.json") for name in ("mma", "mrnn", "oracle", "e2e")}
    figure, (loss_axis, pearson_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, metrics in curves.items():
        if not metrics:
            continue
        history = [row for row in metrics["history"] if "train_loss" in row]
        losses = [row["train_loss"]["total"] if isinstance(row["train_loss"], dict) else row["train_loss"] for row in history]
        loss_axis.plot([row["epoch"] for row in history], losses, marker="o", label=name)
        if name != "mma":
            pearson_axis.plot([row["epoch"] for row in history], [row["val_pearson_mean"] for row in history],
                              marker="o", label=name)
    loss_axis.set(title="training loss", xlabel="epoch")
    pearson_axis.set(title="validation Pearson (mean of 7 reactions)", xlabel="epoch")
    for axis in (loss_axis, pearson_axis):
        if axis.lines:
            axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "plots" / "losses.png", dpi=100)
    plt.close(figure)
    written.append(out / "plots" / "losses.png")

    final = next((out / name / "test_predictions.npz" for name in ("e2e", "mrnn")
                  if (out / name / "test_predictions.npz").exists()), None)
    if final is not None:
        with np.load(final) as saved:
            predictions, labels = saved["predictions"], saved["labels"]
        if np.isfinite(labels).all():
            figure, axes = plt.subplots(1, len(REACTIONS), figsize=(2.4 * len(REACTIONS), 2.6), sharey=True)
            for k, (axis, name) in enumerate(zip(axes, REACTIONS)):
                axis.scatter(labels[:, k], predictions[:, k], s=8, alpha=0.6)
                r = np.corrcoef(labels[:, k], predictions[:, k])[0, 1]
                axis.set(title=f"{name}\nr = {r:.2f}", xlabel="true", xlim=(0, 1))
            axes[0].set_ylabel(f"predicted ({final.parent.name})")
            figure.tight_layout()
            figure.savefig(out / "plots" / "predictions.png", dpi=100)
            plt.close(figure)
            written.append(out / "plots" / "predictions.png")
    return written


def write_report(out: str | Path, data: str = "SynthAffect", seed: int | None = None, threads: int | None = None) -> dict:
    """Build, write (json, md, plots) and print the report of the run in ``out``."""
    out = Path(out)
    report = build_report(out, data, seed, threads)
    write_json(report, out / "report.json")
    replace_atomically(out / "report.md", lambda file: file.write((format_report(report) + "\n").encode()))
    plots = write_plots(out)
    print("\n" + summary(report))
    print(f"report: {out / 'report.json'}, {out / 'report.md'}" + "".join(f", {p}" for p in plots))
    return report

"""``python -m mmarnn_min.predict VIDEO``: the 7 reaction intensities of one video, with the
networks a training run saved (``mmarnn_min.inference``: decode, detect, align, MMA, MRNN),
and on request its per-frame table (``--frames FILE.csv``: box, landmarks, valence-arousal,
expressions, AUs) and its timeline (``--plot FILE.png``). An image (PNG, JPEG, ...) gives its
one row: the 7 intensities need a video.

Checkpoints, in the run directory a training run writes (``--checkpoint DIR``, default
runs/latest): ``e2e/best.pt`` when the end-to-end fine-tuning stage ran, else ``mma/best.pt``
and ``mrnn/best.pt``.

Every flag, input and output path is checked before any work; nothing is written until all
is computed, and an existing file is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmarnn_min import cli
from mmarnn_min.checkpoints import load_trained
from mmarnn_min.errors import UserError
from mmarnn_min.files import json_text
from mmarnn_min.inference import IMAGE_NOTE, Analysis, analyse
from mmarnn_min.media import probe_media
from mmarnn_min.runtime import resolve_device, set_threads
from mmarnn_min.tables import format_table
from mmarnn_min.timeline_plot import PLOT_SUFFIXES, require_matplotlib, save_timeline
from mmarnn_min.video_faces import DETECT_SIDE, DETECTORS


def format_prediction(result: dict) -> str:
    """A header line and the table of the 7 intensities; for an image, the note and its affect."""
    detector = result["detector"] + (f", chosen by auto: {result['detector_reason']}" if result["detector_reason"] else "")
    if "image" in result:
        affect = result["affect"]
        rows = [["valence", f"{affect['valence']:.4f}"], ["arousal", f"{affect['arousal']:.4f}"]]
        rows += [[name, f"{value:.4f}"] for group in ("expressions", "aus") for name, value in affect[group].items()]
        return (f"{result['image']}: a face found (detector: {detector})\n"
                + format_table(["per frame", "value"], rows) + f"\nnote: {IMAGE_NOTE}")
    header = (f"{result['video']}: {result['frames_with_face']} of {result['frames']} frames read hold "
              f"a face (detector: {detector})")
    rows = [[reaction, f"{value:.4f}"] for reaction, value in result["intensities"].items()]
    return header + "\n" + format_table(["reaction", "intensity"], rows)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser("python -m mmarnn_min.predict", __doc__)
    parser.add_argument("video", type=Path, metavar="VIDEO", help="the video file, or an image (PNG, JPEG, ...)")
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/latest"), metavar="DIR",
                        help="the training run's directory (default: runs/latest)")
    parser.add_argument("--detector", choices=DETECTORS, default="auto",
                        help="auto: VIDEO's <stem>.landmarks.npy if beside it, else RetinaFace when installed with "
                             "local weights, else MTCNN when facenet-pytorch is installed, else Haar (default: auto)")
    parser.add_argument("--retinaface-weights", type=Path, metavar="FILE",
                        help="RetinaFace weights (default: the torch hub cache)")
    parser.add_argument("--detect-side", type=int, default=DETECT_SIDE, metavar="PX",
                        help=f"Haar and MTCNN look at frames shrunk to this longer side: faster, but faces smaller "
                             f"than about 1/13 of it are missed (default: {DETECT_SIDE}; 0: full resolution)")
    parser.add_argument("--stride", type=int, default=1, metavar="K", help="read every K-th frame (default: 1)")
    parser.add_argument("--frames", type=Path, metavar="FILE.csv",
                        help="write the per-frame table: box, landmarks, valence, arousal, expressions, AUs")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help=f"draw the video's timeline and its 7 intensities ({', '.join(PLOT_SUFFIXES)})")
    parser.add_argument("--overwrite", action="store_true", help="replace --frames and --plot files that exist")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: one per core)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def check_output(path: Path, flag: str, suffixes: tuple[str, ...], overwrite: bool, source: Path) -> None:
    """A UserError unless ``path`` can be written: a suffix of ``suffixes``, in a directory
    that exists, not the input, and not an existing file (unless ``overwrite``)."""
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the directory {path.parent} does not exist")
    if path.exists() and path.resolve() == source.resolve():
        raise UserError(f"{flag} {path} is the input file itself")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory: name a file in it")
    if path.exists() and not overwrite:
        raise UserError(f"{flag} {path} exists: pass --overwrite to replace it, or name another file")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every flag and output path, before anything runs."""
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    if args.detect_side < 0:
        parser.error(f"--detect-side must be >= 0 (0: full resolution), got {args.detect_side}")
    if args.frames is not None:
        check_output(args.frames, "--frames", (".csv",), args.overwrite, args.video)
    if args.plot is not None:
        check_output(args.plot, "--plot", PLOT_SUFFIXES, args.overwrite, args.video)
        require_matplotlib()


def write_outputs(analysis: Analysis, frames: Path | None, plot: Path | None) -> None:
    """The requested files, each written atomically; where each went, on stderr."""
    if frames is not None:
        analysis.table.write_csv(frames)
        print(f"wrote {frames}: {len(analysis.table.index)} frame(s)", file=sys.stderr)
    if plot is not None:
        summary = analysis.summary()
        title = (f"{analysis.path.name}: {summary['frames_with_face']} of {summary['frames']} frames read hold a "
                 f"face (detector: {analysis.detector.name})")
        save_timeline(analysis.table, analysis.intensities, title, plot)
        print(f"wrote {plot}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    """Check the flags and paths, load the run's networks (refusing a damaged checkpoint or two
    networks of different runs), read the video, print, then write the files asked for. A
    mistake raises a UserError before anything is written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    set_threads(args.threads)
    device = resolve_device(args.device)
    pipeline = load_trained(args.checkpoint, device)
    if probe_media(args.video).is_image and args.plot is not None:
        raise UserError(f"--plot draws a video's timeline; {args.video} is an image: its values are in "
                        f"--frames and --json")
    analysis = analyse(pipeline, args.video, args.detector, args.stride, device, args.retinaface_weights,
                       args.detect_side)
    result = analysis.summary()
    print(json_text(result) if args.json else format_prediction(result))
    write_outputs(analysis, args.frames, args.plot)
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.predict"))

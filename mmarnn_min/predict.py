"""``python -m mmarnn_min.predict VIDEO``: the 7 reaction intensities of one video, with the
networks a training run saved (``mmarnn_min.inference``: decode, detect, align, MMA, MRNN).

Checkpoints, in the run directory a training run writes (``--checkpoint DIR``, default
runs/latest): ``e2e/best.pt`` when the end-to-end fine-tuning stage ran, else ``mma/best.pt``
and ``mrnn/best.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmarnn_min import cli
from mmarnn_min.checkpoints import load_trained
from mmarnn_min.files import json_text
from mmarnn_min.inference import predict_video
from mmarnn_min.runtime import resolve_device
from mmarnn_min.tables import format_table
from mmarnn_min.video_faces import DETECTORS


def format_prediction(result: dict) -> str:
    """A header line and the table of the 7 intensities."""
    header = (f"{result['video']}: {result['frames_with_face']} of {result['frames']} frames read hold "
              f"a face (detector: {result['detector']})")
    rows = [[reaction, f"{value:.4f}"] for reaction, value in result["intensities"].items()]
    return header + "\n" + format_table(["reaction", "intensity"], rows)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser("python -m mmarnn_min.predict", __doc__)
    parser.add_argument("video", type=Path, metavar="VIDEO", help="the video file")
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/latest"), metavar="DIR",
                        help="the training run's directory (default: runs/latest)")
    parser.add_argument("--detector", choices=DETECTORS, default="auto",
                        help="auto: VIDEO's <stem>.landmarks.npy if beside it, else RetinaFace when "
                             "installed with local weights, else Haar (default: auto)")
    parser.add_argument("--retinaface-weights", type=Path, metavar="FILE",
                        help="RetinaFace weights (default: the torch hub cache)")
    parser.add_argument("--stride", type=int, default=1, metavar="K", help="read every K-th frame (default: 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Check the flags, load the run's networks (refusing a damaged checkpoint or two networks
    of different runs), predict, print. A mistake raises a UserError."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    device = resolve_device(args.device)
    pipeline = load_trained(args.checkpoint, device)
    result = predict_video(pipeline, args.video, args.detector, args.stride, device, args.retinaface_weights)
    print(json_text(result) if args.json else format_prediction(result))
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.predict"))

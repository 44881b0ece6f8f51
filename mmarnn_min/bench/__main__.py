"""``python -m mmarnn_min.bench``: every benchmark's side-by-side ratios, on the CPU and, when
one is visible, on the GPU. ``--only routing`` picks one part; ``--quick`` shrinks the shapes
(a smoke test, not a measurement)."""

from __future__ import annotations

import argparse

import torch

from mmarnn_min.bench import gru, mma, routing

PARTS = {
    "routing": lambda device, quick: routing.run(
        device,
        batches=(2, 3) if quick else routing.BATCHES,
        shape={"frames": 12, "width": 8, "features": 4} if quick else routing.PAPER_SHAPE,
        turns=2 if quick else 7,
    ),
    "gru": lambda device, quick: gru.run(device, turns=2, **gru.QUICK_SHAPE) if quick else gru.run(device),
    "mma": lambda device, quick: mma.run(device, quick),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmarnn_min.bench", description=__doc__)
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run only this part (repeatable)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="where to measure (default: the CPU and the GPU if there is one)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks that the benchmark runs")
    args = parser.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"))
    for part in args.only or list(PARTS):
        for device in devices:
            print()
            print(PARTS[part](torch.device(device), args.quick))


if __name__ == "__main__":
    main()

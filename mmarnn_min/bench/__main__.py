"""``python -m mmarnn_min.bench``: every benchmark's side-by-side ratios, on the CPU and, when
one is visible, on the GPU. ``--only routing`` picks one part; ``--quick`` shrinks the shapes
(a smoke test, not a measurement); ``--busy-neighbour`` measures while a second PyTorch job
(a matrix-product loop on torch's default threads) runs beside, as on a shared machine."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

import torch

from mmarnn_min import cli
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


NEIGHBOUR = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a)\n"


@contextmanager
def busy_neighbour(enabled: bool):
    """While open, a second PyTorch process multiplies matrices on its default threads."""
    if not enabled:
        yield
        return
    job = subprocess.Popen([sys.executable, "-c", NEIGHBOUR])
    try:
        yield
    finally:
        job.kill()
        job.wait()


def main(argv: list[str] | None = None) -> None:
    parser = cli.Parser("python -m mmarnn_min.bench", __doc__)
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run only this part (repeatable)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="where to measure (default: the CPU and the GPU if there is one)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks that the benchmark runs")
    parser.add_argument("--busy-neighbour", action="store_true",
                        help="measure while a second PyTorch job (matrix products) runs on the same machine")
    args = parser.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")
          + (", beside a busy PyTorch job" if args.busy_neighbour else ""))
    with busy_neighbour(args.busy_neighbour):
        for part in args.only or list(PARTS):
            for device in devices:
                print()
                print(PARTS[part](torch.device(device), args.quick))


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:], "python -m mmarnn_min.bench"))

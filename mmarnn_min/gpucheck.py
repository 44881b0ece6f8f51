"""``python -m mmarnn_min.gpucheck``: what a lent GPU must prove about the masked-routing kernels
(``mmarnn_min/csrc/routing_kernels.cuh``), in one command of about 8 minutes that ends in one
table. Run it from the repository's root (the tests step needs ``tests/``):

    build       compile and load the CUDA extension for the visible GPU
    tests       the CUDA cases of tests/test_routing.py and tests/test_extension_build.py
                (pytest -m cuda): every law on CUDA tensors, opcheck, gradcheck, torch.compile,
                a CUDA-graph capture
    memcheck    compute-sanitizer --tool memcheck on a small forward + backward that needs
                several blocks of every kernel
    racecheck   compute-sanitizer --tool racecheck on the same
    benchmark   python -m mmarnn_min.bench --only routing --device cuda: the ratios against the
                fallback and the fused op's GB/s and % of the memory's peak
    train       a short python -m mmarnn_min.train --config paper --amp run (mixed precision)

Each step is a separate process with its own time limit, so that a crash or a hang in one
cannot take the others down, and the steps share one deadline (--budget). Without a GPU (or
without compute-sanitizer) the steps that need one say so and are skipped; the command exits 1
only when a step that ran failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
STEPS = ("environment", "build", "tests", "memcheck", "racecheck", "benchmark", "train")

# A forward and backward on CUDA tensors that needs several blocks of every kernel: 70 videos
# (two tiles of 64), F = 40 (two tiles of 32), K = 20 * 16 = 320 (three blocks of 128 columns).
SMALL_CASE = """
import torch
from mmarnn_min.routing import masked_routing
torch.manual_seed(0)
for dtype in (torch.float32, torch.bfloat16):
    h = torch.randn(70, 20, 16, device="cuda", dtype=dtype, requires_grad=True)
    lengths = torch.randint(0, 21, (70,), device="cuda")
    weight = torch.randn(40, 20 * 16 + 8, device="cuda", dtype=dtype)[:, :320].requires_grad_()
    bias = torch.randn(40, device="cuda", dtype=dtype, requires_grad=True)
    masked_routing(h, lengths, weight, bias, backend="extension").sum().backward()
torch.cuda.synchronize()
print("small case done")
"""


@dataclass
class Result:
    step: str
    status: str        # "ok", "FAILED", "skipped: why"
    seconds: float
    detail: str        # one line


def run_step(command: list[str], timeout: float):
    """(exit code, or None when it ran out of time; stdout and stderr; seconds)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - started
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout or b""
        return None, output.decode(errors="replace") if isinstance(output, bytes) else output, time.perf_counter() - started


def last_line(output: str, pattern: str | None = None) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if pattern:
        lines = [line for line in lines if re.search(pattern, line)] or lines
    return lines[-1][:160] if lines else ""


def compute_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        candidate = Path(home or "/nonexistent") / "bin" / "compute-sanitizer"
        if candidate.exists():
            return str(candidate)
    return None


def environment() -> Result:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    sanitizer = compute_sanitizer() or "no compute-sanitizer"
    nvcc = shutil.which("nvcc") or (str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"))
    detail = f"torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}, nvcc {'found' if Path(nvcc).exists() else 'missing'}, {sanitizer}"
    return Result("environment", "ok", 0.0, detail)


def check(step: str, budget_left: float, work_dir: Path) -> Result:
    """Run one step within ``budget_left`` seconds."""
    python = sys.executable
    if step == "environment":
        return environment()
    if not torch.cuda.is_available():
        return Result(step, "skipped: no CUDA device", 0.0,
                      "tests/test_extension_build.py compiles the CUDA sources without one" if step == "build" else "")
    limits = {"build": 300, "tests": 150, "memcheck": 120, "racecheck": 120, "benchmark": 120, "train": 180}
    timeout = min(limits[step], budget_left)
    if timeout < 20:
        return Result(step, "skipped: out of time", 0.0, "raise --budget")

    if step == "build":
        code, output, seconds = run_step([python, "-c", "from mmarnn_min import extension; print(extension.build('cuda'))"], timeout)
        return finish(step, code, output, seconds, last_line(output, r"\.so"))
    if step == "tests":
        if not (REPO / "tests" / "test_routing.py").exists():
            return Result(step, "skipped: tests/ not found", 0.0, "run from a checkout of the repository")
        command = [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                   "tests/test_routing.py", "tests/test_extension_build.py"]
        code, output, seconds = run_step(command, timeout)
        return finish(step, code, output, seconds, last_line(output, r"passed|failed|error"))
    if step in ("memcheck", "racecheck"):
        sanitizer = compute_sanitizer()
        if sanitizer is None:
            return Result(step, "skipped: no compute-sanitizer", 0.0, "")
        command = [sanitizer, "--tool", step, "--error-exitcode", "1", "--print-limit", "20",
                   python, "-c", SMALL_CASE]
        code, output, seconds = run_step(command, timeout)
        return finish(step, code, output, seconds, last_line(output, r"ERROR SUMMARY|RACECHECK SUMMARY|error"))
    if step == "benchmark":
        code, output, seconds = run_step([python, "-m", "mmarnn_min.bench", "--only", "routing", "--device", "cuda"],
                                         timeout)
        row = last_line(output, r"^256\s+fwd\+bwd")
        print(output)  # the table itself, for the notes
        return finish(step, code, output, seconds, f"B=256 fwd+bwd row: {row}")
    if step == "train":
        command = [python, "-m", "mmarnn_min.train", "--config", "paper", "--amp", "--device", "cuda",
                   "--out", str(work_dir / "train"), "--mma-epochs", "1", "--mrnn-epochs", "1",
                   "--data-train-images-per-source", "256", "--data-eval-images-per-source", "64",
                   "--data-train-videos", "24", "--data-eval-videos", "12",
                   "--data-min-frames", "60", "--data-max-frames", "120"]
        code, output, seconds = run_step(command, timeout)
        if code == 2 and "unrecognized arguments" in output:
            return Result(step, "FAILED", seconds, "train does not accept a flag yet: " + last_line(output, "unrecognized"))
        return finish(step, code, output, seconds, last_line(output, r"pearson|Pearson|report|Error|error"))
    raise ValueError(step)


def finish(step: str, code: int | None, output: str, seconds: float, detail: str) -> Result:
    if code is None:
        return Result(step, "FAILED", seconds, f"timed out; last output: {last_line(output)}")
    if code != 0:
        return Result(step, "FAILED", seconds, f"exit {code}: {last_line(output)}")
    return Result(step, "ok", seconds, detail)


def table(results: list[Result]) -> str:
    rows = [("step", "result", "seconds", "detail")] + [(r.step, r.status, f"{r.seconds:.0f}", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}" for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmarnn_min.gpucheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480, help="seconds for all steps together (default: 480)")
    parser.add_argument("--only", choices=STEPS, nargs="+", help="run only these steps")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.budget
    results = []
    with tempfile.TemporaryDirectory(prefix="gpucheck-") as work:
        for step in args.only or STEPS:
            print(f"gpucheck: {step} ...", flush=True)
            results.append(check(step, deadline - time.perf_counter(), Path(work)))
    print()
    print(table(results))
    return 1 if any(r.status == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

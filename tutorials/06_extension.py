# %% [markdown]
# # Lesson 6: the masked-routing operator in C++ and CUDA, proven without a GPU
#
# **Goal.** Lesson 5 computed masked routing as `linear(route(h, lengths), weight, bias)`:
# it builds a masked copy of h and multiplies through every padded zero. The package also
# ships a *fused* operator written in C++ (CPU) and CUDA (`mmarnn_min/csrc/`) that skips the
# padding altogether. This lesson follows it through its life: how it is compiled on first
# use and cached, how it is registered as a PyTorch operator (`torch.ops.mmarnn_min.*`), how it
# is tested, and, the main part, how its CUDA kernels are run and checked **on a CPU**: an
# emulation of CUDA's execution model runs the kernels' own source, block by block, with the
# threads of a block as real threads, and catches a race you plant in them. Paper section 3.2
# (the routed FC layer); the maths is lesson 5's:
#
#     out[b]         = bias + sum_{t < L_b} W_t h[b, t]
#     grad_h[b, t]   = W_t^T g_b  (t < L_b, else 0)
#     grad_W_t       = sum_{b : t < L_b} g_b h[b, t]^T
#
# If the extension cannot be built on your machine (no C++ compiler, say), the package
# warns once and uses the pure-PyTorch fallback; so does this lesson, and it tells you.

# %%
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import _common
from mmarnn_min import extension
from mmarnn_min.bench import routing as bench_routing
from mmarnn_min.bench.timing import time_side_by_side
from mmarnn_min.cache import cache_root
from mmarnn_min.routing import available_backends, masked_routing, masked_routing_reference

LESSON = "06_extension"
plt = _common.pyplot()
_common.banner("Lesson 6: the C++/CUDA extension")
torch.manual_seed(0)

# %% [markdown]
# ## 1. Built on first use, cached by a key
#
# `mmarnn_min.extension` compiles the sources with `torch.utils.cpp_extension.load` (which
# drives ninja and the C++ compiler) into `<cache>/ext/<kind>-<key>`. The key hashes the
# sources, the torch / CUDA / Python versions and the compiler flags, so a second process
# imports the finished library in milliseconds and any change rebuilds. The cache root is
# `$MMARNN_CACHE`, else `~/.cache/mmarnn_min`.

# %%
print("sources:", sorted(p.name for p in extension.SOURCE_DIR.iterdir() if p.suffix in (".cpp", ".cu", ".h", ".cuh")))
print("cache root:", cache_root())
cpu_dir = extension.build_directory("cpu")
library = cpu_dir / f"{extension.library_name('cpu')}.so"
print("CPU build directory:", cpu_dir, "(already built)" if library.exists() else "(not built yet: this takes ~30 s)")

started = time.perf_counter()
backends = available_backends("cpu")                  # builds or loads the CPU library
have_extension = "extension" in backends
print(f"available_backends('cpu') = {backends} after {time.perf_counter() - started:.1f} s")
if not have_extension:
    if os.environ.get("MMARNN_BACKEND") == "fallback":
        reason = "MMARNN_BACKEND=fallback asks for the fallback"
    else:
        try:
            extension.load(required=True)
            reason = "unknown"
        except RuntimeError as error:
            reason = str(error).splitlines()[0][:200] + " ... (the warning above has the full message)"
    print(f"NOTE: the extension is not available here ({reason}); the lesson goes on with the fallback")

# %% [markdown]
# ## 2. Registered as a PyTorch operator
#
# In C++, `TORCH_LIBRARY(mmarnn_min, m)` declares the operators' *schemas* (their typed
# signatures) and `TORCH_LIBRARY_IMPL(mmarnn_min, CPU, m)` (and `CUDA` in the `.cu` file)
# attaches a kernel for each device; an `AutocastCPU` / `AutocastCUDA` kernel makes the op run
# in bfloat16 or float16 under `torch.autocast`, as `linear` does. Here are those blocks, read
# from the sources:

# %%
for source in ("masked_routing.cpp", "masked_routing_cuda.cu"):
    lines = (extension.SOURCE_DIR / source).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("TORCH_LIBRARY"):
            print(f"--- {source}, line {i + 1}")
            print("\n".join(lines[i:lines.index("}", i) + 1]))

# %% [markdown]
# Loading the library makes the operators appear under `torch.ops.mmarnn_min`. Two pieces are
# registered from Python (`extension._register_operator`):
#
# * `torch.library.register_fake`: a *fake* kernel that only computes the output's shape and
#   dtype. `torch.compile` and other tracers run it on FakeTensors, which have no data.
# * `torch.library.register_autograd`: the backward formula, which calls the second
#   operator, `masked_routing_backward`, asking only for the gradients autograd needs, and
#   adds grad_bias = sum_b g_b in Python.
#
# The fake kernel at work: the paper's shape (B = 64, T = 480, D = 128) without allocating or
# computing anything.

# %%
if have_extension:
    print("schema:", torch.ops.mmarnn_min.masked_routing.default._schema)
    print("schema:", torch.ops.mmarnn_min.masked_routing_backward.default._schema)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake_h, fake_lengths = torch.empty(64, 480, 128), torch.empty(64, dtype=torch.int64)
        fake_out = torch.ops.mmarnn_min.masked_routing(fake_h, fake_lengths, torch.empty(32, 480 * 128), None)
    print(f"fake kernel: output {type(fake_out).__name__} of shape {tuple(fake_out.shape)}, {fake_out.dtype}")
else:
    print("(skipped: no extension, so no torch.ops.mmarnn_min operators)")

# %% [markdown]
# ## 3. Tested
#
# `torch.library.opcheck` runs PyTorch's own battery on an operator call: the schema matches
# what the kernel does (no hidden mutation or aliasing), the autograd registration is sound,
# the fake kernel agrees with the real one, and the operator survives AOT tracing with
# dynamic shapes. `torch.autograd.gradcheck` compares the registered backward with finite
# differences, which needs float64.

# %%
h = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
lengths = torch.tensor([6, 4, 1, 0])
weight = torch.randn(5, 6 * 3, dtype=torch.float64, requires_grad=True)
bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
backend = "extension" if have_extension else "fallback"

if have_extension:
    for with_bias in (bias, None):
        report = torch.library.opcheck(torch.ops.mmarnn_min.masked_routing.default, (h, lengths, weight, with_bias))
        print(f"opcheck ({'with' if with_bias is not None else 'without'} bias):", report)
        assert all(result == "SUCCESS" for result in report.values())
assert torch.autograd.gradcheck(lambda h, w, b: masked_routing(h, lengths, w, b, backend=backend), (h, weight, bias))
print(f"gradcheck passed for the {backend} backend (float64)")

# %% [markdown]
# ## Check: every backend equals the reference loop
#
# On random batches (lengths from 0 to T, float64) the fused operator, the fallback and, in
# section 4, the emulated CUDA kernels must give the outputs and the three gradients of
# `masked_routing_reference`, the loop that defines the op, to rounding.

# %%
def outputs_and_grads(fn, h, lengths, weight, bias, upstream):
    inputs = [t.detach().clone().requires_grad_() for t in (h, weight, bias)]
    out = fn(inputs[0], lengths, inputs[1], inputs[2])
    return [out, *torch.autograd.grad(out, inputs, upstream)]


def worst_difference(backend, trials, shape):
    """Largest difference to the reference over outputs and gradients, on random batches."""
    worst = 0.0
    for trial in range(trials):
        B, T, D, F = (torch.randint(1, high + 1, (1,)).item() for high in shape)
        h = torch.randn(B, T, D, dtype=torch.float64)
        lengths = torch.randint(0, T + 1, (B,))
        weight, bias = torch.randn(F, T * D, dtype=torch.float64), torch.randn(F, dtype=torch.float64)
        upstream = torch.randn(B, F, dtype=torch.float64)
        got = outputs_and_grads(lambda *a: masked_routing(*a, backend=backend), h, lengths, weight, bias, upstream)
        want = outputs_and_grads(masked_routing_reference, h, lengths, weight, bias, upstream)
        worst = max([worst] + [(a - b).abs().max().item() for a, b in zip(got, want)])
    return worst


trials = _common.quick(20, 5)
for name in [b for b in backends if b != "cuda_emulator"]:
    worst = worst_difference(name, trials, shape=(8, 30, 7, 5))
    assert worst < 1e-10, (name, worst)
    print(f"matched: the {name} backend equals the reference loop (outputs and all gradients) on "
          f"{trials} random batches, worst difference {worst:.1e}")

# %% [markdown]
# ## 4. The CUDA kernels, run on a CPU
#
# The kernels live in `routing_kernels.cuh`, written once. `nvcc` compiles them for the GPU;
# an ordinary C++ compiler compiles the *same text* against `cuda_emulator.h`, a small
# emulation of what those kernels rely on:
#
# * a launch runs the grid's blocks one after another, and the threads of a block as real OS
#   threads, each with its own `threadIdx`;
# * `__syncthreads()` is a real barrier, which also reports threads waiting at *different*
#   barriers, or a barrier reached after some threads of the block returned;
# * shared memory is filled with NaN before every block (reading what nobody wrote shows), and
#   every access to it is logged: between two barriers, an element that one thread writes and
#   another reads is a *race*, the bug a missing `__syncthreads()` causes;
# * the launch limits of a real GPU are checked (1024 threads per block, 48 KB of shared
#   memory, 65535 blocks in y and z, no empty grid).
#
# It is the backend `"cuda_emulator"` (CPU tensors only; slow, one OS thread per CUDA thread).
# The batch below needs several blocks of every kernel: 70 videos (two tiles of 64), F = 40
# (two tiles of 32), T*D = 300 columns (several slices of the forward's split-K, three blocks of
# 128 columns in the backward).

# %%
if "cuda_emulator" in backends:
    started = time.perf_counter()
    worst = worst_difference("cuda_emulator", _common.quick(3, 1), shape=(8, 30, 7, 5))
    h, lengths = torch.randn(70, 25, 12, dtype=torch.float64), torch.randint(0, 26, (70,))
    weight, bias = torch.randn(40, 300, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    upstream = torch.randn(70, 40, dtype=torch.float64)
    got = outputs_and_grads(lambda *a: masked_routing(*a, backend="cuda_emulator"), h, lengths, weight, bias, upstream)
    want = outputs_and_grads(masked_routing_reference, h, lengths, weight, bias, upstream)
    worst = max([worst] + [(a - b).abs().max().item() for a, b in zip(got, want)])
    assert worst < 1e-10, worst
    print(f"matched: the CUDA kernels, run by the emulator on the CPU, equal the reference loop "
          f"(worst difference {worst:.1e}, {time.perf_counter() - started:.1f} s)")
else:
    print("(skipped: the emulated kernels come with the CPU extension, which is not available here)")

# %% [markdown]
# ## 5. Plant a race and watch it caught
#
# In the forward kernel each block loads a tile of h and of the weight into shared memory,
# waits at a barrier until every thread has stored its part, then multiplies:
#
#     h_tile[...] = ...;  w_tile[...] = ...;    // each thread stores a few elements
#     __syncthreads();                          // <- everyone's stores are done
#     for (kk ...) acc += h_tile[...] * w_tile[...];   // each thread reads many elements
#
# Delete that barrier and a thread may read an element before its neighbour has stored it.
# On a GPU that gives wrong numbers once in a while (or never, on the GPU you test on). We
# copy the sources, delete the barrier in the copy, and build `emulator_selftest.cpp` (the
# kernels through the emulator, no PyTorch: it compiles in seconds) from it.

# %%
compiler_found = any(subprocess.run(["which", c], capture_output=True).returncode == 0 for c in ("c++", "g++"))
if compiler_found:
    work = Path(tempfile.mkdtemp(prefix="lesson6-"))
    sources = extension.copy_sources(work / "planted")
    kernels = sources / "routing_kernels.cuh"
    barrier = "    __syncthreads();\n#pragma unroll 4\n"          # the barrier after the tiles are loaded
    assert kernels.read_text().count(barrier) == 1
    kernels.write_text(kernels.read_text().replace(barrier, "#pragma unroll 4\n"))

    reports = {}
    for name, source_dir in (("as shipped", extension.SOURCE_DIR), ("barrier removed", sources)):
        started = time.perf_counter()
        program = extension.build_selftest(source_dir)
        run = subprocess.run([str(program)], capture_output=True, text=True, timeout=300)
        reports[name] = run.stdout.strip()
        print(f"{name} (built and run in {time.perf_counter() - started:.1f} s), exit {run.returncode}:\n    {reports[name]}")
    assert reports["as shipped"].startswith("selftest passed")
    assert "shared-memory race" in reports["barrier removed"] and "__syncthreads() is missing" in reports["barrier removed"]
    print("matched: the emulator reports the planted race, naming the array, the threads and the two barriers around it")
else:
    print("(skipped: no C++ compiler to build the self-test)")

# %% [markdown]
# The report is deterministic: the emulator does not need to be unlucky with thread timing to
# see the race, because it checks every pair of accesses between two barriers. The tests
# (`tests/test_cuda_emulator.py`) plant six more bugs this way, and build the self-test under
# ThreadSanitizer and AddressSanitizer too; `tests/test_routing.py` holds the emulated kernels to
# every law the other backends obey. What the emulator cannot tell you is how fast the kernels
# are on a GPU: `python -m mmarnn_min.gpucheck` measures that when a GPU is at hand.
#
# ## 6. Benchmarked
#
# `mmarnn_min.bench.routing.run` times the fused operator, the fallback and the reference
# loop in alternating turns (so a busy machine slows them alike) and prints the ratios. Small
# sizes here; `python -m mmarnn_min.bench --only routing` runs the paper's (T = 480, D = 128,
# F = 32), and `--busy-neighbour` runs it beside a second PyTorch job.

# %%
shape = {"frames": _common.quick(240, 24), "width": _common.quick(64, 8), "features": 32}
batches = _common.quick((4, 32, 128), (2, 8))
turns = _common.quick(5, 2)
print(bench_routing.run(torch.device("cpu"), batches=batches, shape=shape, turns=turns))

# %% [markdown]
# The same contenders as a picture, forward + backward, milliseconds per call:

# %%
implementations = {"fallback": lambda *a: masked_routing(*a, backend="fallback"), "reference loop": masked_routing_reference}
if have_extension:
    implementations = {"fused extension": lambda *a: masked_routing(*a, backend="extension"), **implementations}
seconds = {name: [] for name in implementations}
for batch in batches:
    h, lengths, weight, bias = bench_routing.make_inputs(batch, device=torch.device("cpu"), **shape)
    upstream = torch.ones(batch, shape["features"])
    timed = time_side_by_side(
        {name: (lambda fn=fn: torch.autograd.grad(fn(h, lengths, weight, bias), (h, weight, bias), upstream))
         for name, fn in implementations.items()}, torch.device("cpu"), turns=turns)
    for name in implementations:
        seconds[name].append(timed[name])

fig, ax = plt.subplots(figsize=(7, 3.5))
width = 0.8 / len(implementations)
for k, (name, values) in enumerate(seconds.items()):
    ax.bar([i + k * width for i in range(len(batches))], [1e3 * s for s in values], width, label=name)
ax.set_xticks([i + width * (len(implementations) - 1) / 2 for i in range(len(batches))], [f"B={b}" for b in batches])
ax.set(ylabel="ms per forward+backward", yscale="log",
       title=f"masked routing on the CPU, T={shape['frames']}, D={shape['width']}, F={shape['features']}")
ax.legend(fontsize=8)
_common.save(fig, LESSON, "benchmark.png")

# %% [markdown]
# Read ratios, not milliseconds: on a shared machine the absolute times wander. The reference
# loop is slow at large B because it runs one small product per video (and its backward one
# per video again); the fallback multiplies through all the padding and writes several full
# copies; the fused operator reads each real value of h once, never the padding, and runs all
# its work in one parallel region (the comment at the top of `masked_routing.cpp`).
#
# ## Exercises
#
# Check an answer with `tutorials/checks.py`: in a cell (or a script in `tutorials/`) run
# `import checks`, then the check named after the exercise; it prints "correct" or fails with
# a hint. Worked solutions: `tutorials/solutions/06_extension.py`.
#
# 1. Plant the *other* barrier bug: in a copy, delete the `__syncthreads()` at the end of the
#    forward kernel's loop (before the tiles are loaded again). Before you run the self-test,
#    predict which array and which kind of access the report will name; then check.
#    Check: `checks.check_06_1(array)`, the shared array's name as the kernel spells it.
# 2. In a copy, change the h load `k < k_stop && k < k_video ?` to `k < k_stop ?` (the
#    kernel then reads the padding). Which output of the self-test is wrong, and with what
#    value? Why is the emulator's NaN-filled shared memory not what catches this one?
#    Check: `checks.check_06_2(index, value)`.
# 3. Run `torch.compile(lambda h, w: masked_routing(h, lengths, w, backend="extension"),
#    fullgraph=True)` on a batch, then on lengths with a value > T. Which registered piece
#    does the compiler need, and which exception reaches you? Check:
#    `checks.check_06_3(piece, exception_class)`.

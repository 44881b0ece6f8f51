# %% [markdown]
# # Lesson 6: the masked-routing operator as a C++/CUDA extension
#
# **Goal.** Lesson 5 computed masked routing as `linear(route(h, lengths), weight, bias)`:
# it builds a masked copy of h and multiplies through every padded zero. The package also
# ships a *fused* operator written in C++ (CPU) and CUDA (`mmarnn_min/csrc/`) that skips the
# padding altogether. This lesson follows it through its life: how it is compiled on first
# use and cached, how it is registered as a PyTorch operator (`torch.ops.mmarnn_min.*`) with
# a fake (shape-only) kernel and an autograd formula, how it is tested (`opcheck`,
# `gradcheck`) and how it is timed. Paper section 3.2 (the routed FC layer); the maths is
# lesson 5's:
#
#     out[b]         = bias + sum_{t < L_b} W_t h[b, t]
#     grad_h[b, t]   = W_t^T g_b  (t < L_b, else 0)
#     grad_W_t       = sum_{b : t < L_b} g_b h[b, t]^T
#
# If the extension cannot be built on your machine (no C++ compiler, say), the package
# warns once and uses the pure-PyTorch fallback; so does this lesson, and it tells you.

# %%
import os
import time

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
print("sources:", sorted(p.name for p in extension.SOURCE_DIR.iterdir() if p.suffix in (".cpp", ".cu", ".h")))
print("cache root:", cache_root())
cpu_dir = extension.build_directory("cpu")
library = cpu_dir / f"{extension.library_name('cpu')}.so"
print("CPU build directory:", cpu_dir, "(already built)" if library.exists() else "(not built yet: this takes ~20 s)")

started = time.perf_counter()
backends = available_backends()                       # builds or loads the CPU library
have_extension = "extension" in backends
print(f"available_backends() = {backends} after {time.perf_counter() - started:.1f} s")
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
# attaches a kernel for each device. Here are those blocks, read from the sources:

# %%
for source in ("masked_routing.cpp", "masked_routing_cuda.cu"):
    lines = (extension.SOURCE_DIR / source).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("TORCH_LIBRARY"):
            print(f"--- {source}, line {i + 1}")
            print("\n".join(lines[i:lines.index("}", i) + 1]))

# %% [markdown]
# Loading the library makes the operators appear under `torch.ops.mmarnn_min`. Two pieces are
# registered from Python (`extension._register_python_parts`):
#
# * `torch.library.register_fake`: a *fake* kernel that only computes the output's shape and
#   dtype. `torch.compile` and other tracers run it on FakeTensors, which have no data.
# * `torch.library.register_autograd`: the backward formula, which calls the second
#   operator, `masked_routing_backward`, and adds grad_bias = sum_b g_b in Python.
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
# ## Check: the extension equals the fallback
#
# On random batches (lengths from 0 to T, float64) the fused operator and the pure-PyTorch
# fallback must give the same outputs and the same three gradients, to rounding. Without the
# extension we hold the fallback to the reference loop `masked_routing_reference` instead.

# %%
def outputs_and_grads(fn, h, lengths, weight, bias, upstream):
    inputs = [t.detach().clone().requires_grad_() for t in (h, weight, bias)]
    out = fn(inputs[0], lengths, inputs[1], inputs[2])
    return [out, *torch.autograd.grad(out, inputs, upstream)]


if have_extension:
    candidate, reference = ("extension", lambda *a: masked_routing(*a, backend="extension")), \
                           ("fallback", lambda *a: masked_routing(*a, backend="fallback"))
else:
    candidate, reference = ("fallback", lambda *a: masked_routing(*a, backend="fallback")), \
                           ("naive loop", masked_routing_reference)
worst = 0.0
for trial in range(_common.quick(20, 5)):
    B, T, D, F = torch.randint(1, 9, (1,)).item(), torch.randint(1, 30, (1,)).item(), 7, 5
    h = torch.randn(B, T, D, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,))
    weight, bias = torch.randn(F, T * D, dtype=torch.float64), torch.randn(F, dtype=torch.float64)
    upstream = torch.randn(B, F, dtype=torch.float64)
    got = outputs_and_grads(candidate[1], h, lengths, weight, bias, upstream)
    want = outputs_and_grads(reference[1], h, lengths, weight, bias, upstream)
    for name, a, b in zip(("out", "grad_h", "grad_weight", "grad_bias"), got, want):
        worst = max(worst, (a - b).abs().max().item())
assert worst < 1e-10, worst
print(f"matched: {candidate[0]} equals {reference[0]} (outputs and all gradients) on "
      f"{_common.quick(20, 5)} random batches, worst difference {worst:.1e}")

# %% [markdown]
# On a GPU the CUDA kernels are compiled on first use too (about a minute), and the same
# check runs there:

# %%
if torch.cuda.is_available() and have_extension:
    started = time.perf_counter()
    if extension.load("cuda"):
        print(f"CUDA kernels ready after {time.perf_counter() - started:.0f} s")
        args = [t.cuda() for t in (h, lengths, weight, bias, upstream)]
        got = outputs_and_grads(lambda *a: masked_routing(*a, backend="extension"), *args)
        want = outputs_and_grads(lambda *a: masked_routing(*a, backend="fallback"), *args)
        cuda_worst = max((a - b).abs().max().item() for a, b in zip(got, want))
        assert cuda_worst < 1e-10, cuda_worst
        print(f"matched on {torch.cuda.get_device_name()}: CUDA extension equals the fallback ({cuda_worst:.1e})")
    else:
        print("the CUDA kernels could not be built here; the GPU uses the fallback")
else:
    print("no GPU here (or no extension): the CUDA check is skipped")

# %% [markdown]
# ## 4. Benchmarked
#
# `mmarnn_min.bench.routing.run` times the fused operator, the fallback and the naive loop in
# alternating turns (so a busy machine slows them alike) and prints the ratios. Small sizes
# here; `python -m mmarnn_min.bench` runs the paper's (T = 480, D = 128, F = 32).

# %%
shape = {"frames": _common.quick(240, 24), "width": _common.quick(64, 8), "features": 32}
batches = _common.quick((4, 32, 128), (2, 8))
turns = _common.quick(5, 2)
print(bench_routing.run(torch.device("cpu"), batches=batches, shape=shape, turns=turns))

# %% [markdown]
# The same contenders as a picture, forward + backward, milliseconds per call:

# %%
implementations = {"fallback": lambda *a: masked_routing(*a, backend="fallback"), "naive loop": masked_routing_reference}
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
# Read ratios, not milliseconds: on a shared 2-core machine the absolute times wander. The
# naive loop is slow at large B because it runs one small product per video; the fallback
# multiplies through all the padding; the fused operator sorts the videos by length and runs
# one BLAS product per block of frames over exactly the videos that reach it (the diagram at
# the top of `masked_routing.cpp`).
#
# ## Exercises
#
# 1. Delete nothing, but *move* the cache: run this lesson with `MMARNN_CACHE=/tmp/fresh`
#    and time the first `available_backends()` call; run it again. What did the second run
#    skip, and which file in the build directory tells you?
# 2. Run `torch.compile(lambda h, w: masked_routing(h, lengths, w, backend="extension"))` on
#    a batch. Which of the registered pieces does the compiler need, and what happens if you
#    give it lengths with a value > T?
# 3. In `bench_routing.run`, change the lengths to all equal T (no padding at all). Does the
#    fused operator still beat the fallback? Explain with the two implementations' work.

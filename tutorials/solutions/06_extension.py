"""Worked solutions to the exercises of lesson 6 (the C++/CUDA extension) as the lesson states
them now; the answers with a definite value are passed to their checks in
``tutorials/checks.py``. Run: ``python tutorials/solutions/06_extension.py``."""

# %%
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import torch

import _common
import checks
from mmarnn_min import extension
from mmarnn_min.bench import routing as bench_routing
from mmarnn_min.bench.timing import time_side_by_side
from mmarnn_min.routing import available_backends, masked_routing

have_extension = "extension" in available_backends()

# %% [markdown]
# ## 1. Built once, then loaded
#
# Two fresh processes share one new cache folder: the first compiles (seconds to a minute),
# the second finds the finished shared library in the build directory and only loads it.
# The library file is what tells: `extension.build_directory("cpu") / (library_name + ".so")`.
# (Quick mode reuses the current cache, so both runs may just load it.)

# %%
cache = tempfile.mkdtemp(prefix="mmarnn-cache-") if not _common.QUICK else os.environ.get("MMARNN_CACHE", "")
timing = ("import time; t = time.perf_counter(); from mmarnn_min.routing import available_backends; "
          "b = available_backends(); print(f'{time.perf_counter() - t:.2f} s', b)")
environment = {**os.environ, **({"MMARNN_CACHE": cache} if cache else {})}
for attempt in ("first", "second"):
    result = subprocess.run([sys.executable, "-c", timing], env=environment, capture_output=True, text=True)
    print(f"{attempt} process: available_backends() took {result.stdout.strip()}")
library = extension.build_directory("cpu") / f"{extension.library_name('cpu')}.so"
print("the file a second process loads instead of compiling:", library.name)
checks.check_06_1(library.name)

# %% [markdown]
# ## 2. What a compiler needs, and what a bad length does
#
# `torch.compile` traces the operator with FakeTensors, which have shapes but no data: it
# needs the fake kernel (`torch.library.register_fake`) to know the output's shape, and the
# autograd registration to differentiate through it. A length > T is caught by the input
# checks of `masked_routing` before any kernel runs (a ValueError naming `lengths`); the
# checks read the lengths' values, so the compiler runs them outside the graph.

# %%
h, lengths, weight = torch.randn(3, 5, 4), torch.tensor([5, 2, 1]), torch.randn(6, 20)
backend = "extension" if have_extension else "fallback"
compiled = torch.compile(lambda h, lengths, w: masked_routing(h, lengths, w, backend=backend), backend="aot_eager")
assert torch.allclose(compiled(h, lengths, weight), masked_routing(h, lengths, weight, backend="fallback"), atol=1e-6)
try:
    compiled(h, torch.tensor([6, 2, 1]), weight)
    error = None
except Exception as exception:  # noqa: BLE001 - which exception is the answer
    error = type(exception)
    print(f"lengths with a value > T: {error.__name__}: {str(exception).splitlines()[0]}")
checks.check_06_2("register_fake", error)

# %% [markdown]
# ## 3. No padding at all (open)
#
# With every length equal to T the fallback wastes nothing on padding; what is left of the
# fused operator's advantage is not building the masked copy of h. Time both: the ratio
# depends on the machine.

# %%
shape = {"frames": _common.quick(240, 24), "width": _common.quick(64, 8), "features": 32}
for batch in _common.quick((8, 64), (4,)):
    h, lengths, weight, bias = bench_routing.make_inputs(batch, device=torch.device("cpu"), **shape)
    lengths = torch.full_like(lengths, shape["frames"])                      # no padding
    implementations = {"fallback": "fallback", **({"fused extension": "extension"} if have_extension else {})}
    seconds = time_side_by_side(
        {name: (lambda b=b: torch.autograd.grad(masked_routing(h, lengths, weight, bias, backend=b),
                                                (h, weight, bias), torch.ones(batch, shape["features"])))
         for name, b in implementations.items()}, torch.device("cpu"), turns=_common.quick(5, 2))
    print(f"B={batch}, every length = T: " + ", ".join(f"{name} {1e3 * s:.2f} ms" for name, s in seconds.items()))

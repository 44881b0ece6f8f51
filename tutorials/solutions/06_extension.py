"""Worked solutions to the exercises of lesson 6 (the C++/CUDA extension, the emulator); each
answer is passed to its check in ``tutorials/checks.py``. Run:
``python tutorials/solutions/06_extension.py``."""

# %%
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tutorials/: checks and _common

import torch

import checks
from mmarnn_min import extension
from mmarnn_min.routing import available_backends, masked_routing

# %% [markdown]
# ## 1. The other barrier
#
# Prediction: the barrier at the end of the loop keeps a fast thread from loading the *next*
# slice's tiles while a slower one still reads the current ones. Without it the first
# conflict is a thread writing a tile element that another thread has read since the last
# barrier: a write after a read of the same shared array. The report says which array.

# %%
report = checks.planted_selftest_report(checks.END_OF_LOOP_BARRIER,
                                        checks.END_OF_LOOP_BARRIER.replace("    __syncthreads();\n", ""))
print(report.strip().splitlines()[0])
array = re.search(r"shared-memory race: thread \d+ of block \([^)]*\) (?:reads|writes) (\w+)\[", report).group(1)
checks.check_06_1(array)

# %% [markdown]
# ## 2. Reading the padding
#
# The self-test fills every padded value of h with NaN; a kernel that reads one adds NaN into
# a sum, and the self-test's comparison with the reference finds a NaN output. The emulator's
# NaN-filled *shared* memory is not what catches it: the kernel writes every tile element it
# reads (the load loop covers the whole tile), so no uninitialised shared value is read; the
# bad value comes from global memory, read where it should not be.

# %%
report = checks.planted_selftest_report(checks.PADDING_GUARD, checks.PADDING_GUARD.replace(" && k < k_video", ""))
wrong = re.search(r"wrong result: out\[(\d+)\] = (\S+),", report)
print(wrong.group(0))
checks.check_06_2(int(wrong.group(1)), float(wrong.group(2)))

# %% [markdown]
# ## 3. Compiled, and a length > T
#
# `torch.compile` traces the operator with FakeTensors, which have shapes but no data: it needs
# the fake kernel (`torch.library.register_fake`) to know the output's shape, and the autograd
# registration to differentiate through it. A length > T cannot be caught while tracing (the
# values are not there); the operator checks it when the compiled graph runs.

# %%
backend = "extension" if "extension" in available_backends() else "fallback"
h, lengths, weight = torch.randn(3, 5, 4), torch.tensor([5, 2, 1]), torch.randn(6, 20)
compiled = torch.compile(lambda h, lengths, w: masked_routing(h, lengths, w, backend=backend), backend="aot_eager")
assert torch.allclose(compiled(h, lengths, weight), masked_routing(h, lengths, weight, backend="fallback"), atol=1e-6)
try:
    compiled(h, torch.tensor([6, 2, 1]), weight)
    error = None
except Exception as exception:  # noqa: BLE001 - which exception is the answer
    error = type(exception)
    print(f"lengths with a value > T: {error.__name__}: {str(exception).splitlines()[0]}")
checks.check_06_3("register_fake", error)
print("the self-test, unchanged:", subprocess.run([str(extension.build_selftest())], capture_output=True,
                                                  text=True).stdout.strip())

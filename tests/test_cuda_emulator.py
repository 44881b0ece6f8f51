"""The CUDA emulator (mmarnn_min/csrc/cuda_emulator.h) proves the CUDA kernels without a GPU:
its self-test program runs the real kernels, clean under ThreadSanitizer and AddressSanitizer,
and a bug planted in a copy of the kernels must be reported: a missing barrier, a read of the
padding, a barrier some threads never reach, a shared-memory overrun, a launch asking for
less shared memory than the kernel uses, a block too large for CUDA.

(The law suite runs through the emulator in tests/test_routing.py, backend "cuda_emulator".)
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mmarnn_min import extension

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no host C++ compiler")


def run(program) -> subprocess.CompletedProcess:
    return subprocess.run([str(program)], capture_output=True, text=True, timeout=300,
                          env={"TSAN_OPTIONS": "halt_on_error=1", "ASAN_OPTIONS": "detect_leaks=0"})


def test_the_kernels_pass_the_selftest():
    result = run(extension.build_selftest())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "selftest passed" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", ["thread", "address"])
def test_the_kernels_pass_the_selftest_under_a_sanitizer(sanitizer):
    """ThreadSanitizer sees the threads of a block as the OS threads they are; AddressSanitizer
    (with UndefinedBehaviorSanitizer) every access out of the host buffers. About 15 s each."""
    result = run(extension.build_selftest(sanitizer=sanitizer))
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "selftest passed" in result.stdout and "WARNING" not in result.stderr


# name -> (text in routing_kernels.cuh, what replaces it, what the self-test must print)
PLANTS = {
    "missing barrier after loading the tiles": (
        "    __syncthreads();\n#pragma unroll 4\n",
        "#pragma unroll 4\n",
        "shared-memory race",
    ),
    "missing barrier before the tiles are reloaded": (
        "    __syncthreads();\n  }\n  for (int i = 0; i < 4; ++i) {",
        "  }\n  for (int i = 0; i < 4; ++i) {",
        "shared-memory race",
    ),
    "read of the padding": (
        "k < k_stop && k < k_video ?",
        "k < k_stop ?",
        "wrong result",
    ),
    "threads returning before a barrier": (
        "if (block_begin >= reach) {",
        "if (k >= reach) {",
        "thread(s)",
    ),
    "shared array overrun": (
        'dynamic_shared_array<acc_t>("h_tile", 0, kStep * kVideoPitch)',
        'dynamic_shared_array<acc_t>("h_tile", 0, kStep * kTileVideos)',
        "out-of-bounds shared-memory access",
    ),
    "launch with too little shared memory": (
        "sizeof(acc_t) * kStep * (kVideoPitch + kFeaturePitch) + sizeof(int64_t) * kTileVideos",
        "sizeof(acc_t) * kStep * (kVideoPitch + kFeaturePitch)",
        "but the launch gave",
    ),
    "a block of 2048 threads": (
        "constexpr int kBackwardThreads = 128;",
        "constexpr int kBackwardThreads = 2048;",
        "2048 threads per block",
    ),
}


def planted_copy(tmp_path, name):
    """A copy of the sources with the bug ``name`` planted in the kernels."""
    old, new, _ = PLANTS[name]
    source = extension.copy_sources(tmp_path / "csrc")
    kernels = source / "routing_kernels.cuh"
    text = kernels.read_text()
    assert text.count(old) == 1, f"the kernels changed: re-aim the plant {name!r}"
    kernels.write_text(text.replace(old, new))
    return source


@pytest.mark.parametrize("name", list(PLANTS))
def test_a_planted_bug_is_caught(name, tmp_path, cache_dir):
    result = run(extension.build_selftest(planted_copy(tmp_path, name)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "selftest FAILED" in result.stdout and PLANTS[name][2] in result.stdout, result.stdout

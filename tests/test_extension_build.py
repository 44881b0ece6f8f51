"""How the extension is built: compiled once, reused by new processes, never stuck on a stale
lock, the CUDA sources compiled even without a GPU, and a clean fallback when a build fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils import cpp_extension

from mmarnn_min import extension
from mmarnn_min.routing import masked_routing


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(
    cpp_extension.CUDA_HOME is None or torch.version.cuda is None,
    reason="no nvcc or a CPU-only build of torch: the CUDA sources cannot be compiled here",
)
def test_cuda_sources_compile_and_register_their_kernels():
    """Runs on machines without a GPU too (CI), so a CUDA compile error turns the suite red."""
    extension.build("cuda")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("mmarnn_min::masked_routing", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("mmarnn_min::masked_routing_backward", "CUDA")


def test_a_new_process_loads_the_built_library_without_compiling():
    library = extension.build("cpu")
    before = library.stat().st_mtime_ns
    run_python("""
        import torch.utils.cpp_extension as cpp
        def no_compiling(*args, **kwargs):
            raise AssertionError("load() was called although the library is built")
        cpp.load = no_compiling
        from mmarnn_min import extension
        extension.build("cpu")
    """)
    assert library.stat().st_mtime_ns == before


def test_a_stale_build_lock_does_not_hang_a_fresh_build(tmp_path):
    """torch's load() waits forever on the ``lock`` file of a killed build; ours removes it."""
    out = run_python("""
        from mmarnn_min import extension
        directory = extension.build_directory("cpu")
        directory.mkdir(parents=True)
        (directory / "lock").write_text("")  # as left by a build killed half-way
        print(extension.build("cpu"))
    """, env={"MMARNN_CACHE": str(tmp_path)}, timeout=600)
    assert out.strip().startswith(str(tmp_path))


def test_the_build_directory_changes_with_the_sources(tmp_path, monkeypatch):
    for name in extension.SOURCES["cpu"] + extension.HEADERS:
        (tmp_path / name).write_bytes((extension.SOURCE_DIR / name).read_bytes())
    monkeypatch.setattr(extension, "SOURCE_DIR", tmp_path)
    original = extension.build_directory("cpu")
    (tmp_path / "masked_routing.cpp").write_text((tmp_path / "masked_routing.cpp").read_text() + "\n// edit\n")
    assert extension.build_directory("cpu") != original


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(extension, "_loaded", {})
    monkeypatch.setattr(extension, "_errors", {})
    monkeypatch.delenv("MMARNN_BACKEND", raising=False)

    def broken(kind):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(extension, "build", broken)
    with pytest.warns(RuntimeWarning, match="using the pure-PyTorch fallback. Reason: RuntimeError: no compiler here"):
        assert extension.load() is False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extension.load() is False  # no second warning
        h, lengths, weight = torch.randn(2, 3, 4), torch.tensor([3, 1]), torch.randn(5, 12)
        assert masked_routing(h, lengths, weight).shape == (2, 5)
    with pytest.raises(RuntimeError, match="extension is unavailable: RuntimeError: no compiler here"):
        masked_routing(h, lengths, weight, backend="extension")


def test_the_cuda_arch_list_ends_with_ptx(monkeypatch):
    """Compiled for the visible GPUs (or 8.0 and 9.0) plus PTX, which a newer GPU's driver
    compiles when it loads the library; a TORCH_CUDA_ARCH_LIST the user sets is kept."""
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert extension.cuda_arch_list() == "8.0;9.0+PTX"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0) if i == 0 else (8, 6))
    assert extension.cuda_arch_list() == "8.6;9.0+PTX"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert extension.cuda_arch_list() == "9.0"


def test_a_failed_cuda_build_is_not_reported_as_the_extension(monkeypatch):
    """available_backends tells the truth per device: with the CUDA library broken, CUDA tensors
    get the fallback only, while CPU tensors keep the extension."""
    from mmarnn_min.routing import available_backends

    extension.load("cpu", required=True)
    monkeypatch.setattr(extension, "_loaded", {"cpu": True})
    monkeypatch.setattr(extension, "_errors", {})
    monkeypatch.delenv("MMARNN_BACKEND", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken(kind):
        raise RuntimeError("nvcc failed")

    monkeypatch.setattr(extension, "build", broken)
    with pytest.warns(RuntimeWarning, match="could not build the cuda masked-routing extension"):
        assert available_backends("cuda") == ["fallback"]
    assert available_backends("cpu") == ["extension", "fallback", "cuda_emulator"]


def test_the_selftest_program_is_built_once(cache_dir):
    program = extension.build_selftest()
    before = program.stat().st_mtime_ns
    assert extension.build_selftest() == program and program.stat().st_mtime_ns == before

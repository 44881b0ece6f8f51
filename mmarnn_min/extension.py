"""Builds and loads the fused masked-routing operators (``mmarnn_min/csrc``) on first use.

Two shared libraries, each compiled once per machine with ``torch.utils.cpp_extension.load``:

* ``cpu``:  ``masked_routing.cpp``, the operators' schemas, their CPU kernels and their autocast
  rule; and ``masked_routing_emulated.cpp``, the CUDA kernels (``routing_kernels.cuh``) run on
  the CPU by the emulation layer ``cuda_emulator.h`` (backend ``"cuda_emulator"``). Built
  whenever the extension is used.
* ``cuda``: ``masked_routing_cuda.cu``, the same CUDA kernels for the GPU. Built when a CUDA
  tensor meets the operator (or on request: the tests compile it on machines without a GPU so
  that a CUDA compile error is caught there too).

And one program without PyTorch, ``emulator_selftest.cpp`` (``build_selftest``): the CUDA
kernels through the emulator, small enough to build in seconds under a sanitizer.

Each build goes into ``<cache>/ext/<kind>-<key>`` where the key hashes the sources, the torch,
CUDA and Python versions, the flags and the target architectures, so a new process imports the
library already built instead of re-running ninja, and a change of any of those rebuilds. A
build is serialised by an OS file lock that dies with its process; while holding it we remove
the ``lock`` file that ``load()`` leaves behind when a build is killed half-way (otherwise every
later ``load()`` would wait on it forever).

``load()`` never raises by default: when the extension cannot be built it warns once, with
the compiler's message, and ``mmarnn_min.routing`` uses the pure-PyTorch fallback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from mmarnn_min.cache import cache_root

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = {
    "cpu": ("masked_routing.cpp", "masked_routing_emulated.cpp"),
    "cuda": ("masked_routing_cuda.cu",),
}
HEADERS = ("masked_routing.h", "kernel_ops.h", "routing_kernels.cuh", "cuda_emulator.h")
SELFTEST = "emulator_selftest.cpp"
# -Wno-unknown-pragmas: the kernels' #pragma unroll is for nvcc; -Wno-psabi: GCC notes that the
# CPU kernels' SIMD values would pass differently between AVX-512, AVX2 and older code, but they
# never cross a call (the helpers are inlined)
CXX_FLAGS = ["-O3", "-pthread", "-Wno-unknown-pragmas", "-Wno-psabi"]
# at::parallel_for is OpenMP compiled into the caller: without -fopenmp it runs on one thread
OPENMP_FLAGS = ["-fopenmp"] if torch.backends.openmp.is_available() and sys.platform.startswith("linux") else []
CUDA_FLAGS = ["-O3"]
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"  # when no GPU is visible; +PTX: newer GPUs compile it on load
SANITIZERS = {
    None: [],
    "thread": ["-fsanitize=thread"],
    "address": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"],
}

_loaded: dict[str, bool] = {}       # kind -> the library is loaded in this process
_errors: dict[str, str] = {}        # kind -> why it could not be built or loaded
_python_parts_registered = False


def cuda_arch_list() -> str:
    """The CUDA architectures to compile for: ``TORCH_CUDA_ARCH_LIST``, else the visible
    GPUs' with PTX for the newest (so a newer GPU can still run it), else ``DEFAULT_CUDA_ARCHS``."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{major}.{minor}" for major, minor in capabilities) + "+PTX"
    return DEFAULT_CUDA_ARCHS


def _digest(names: tuple[str, ...], source_dir: Path, extra: str) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update((source_dir / name).read_bytes())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def build_directory(kind: str) -> Path:
    """``<cache>/ext/<kind>-<key>``: the key changes with anything that changes the binary."""
    extra = f"torch={torch.__version__};cuda={torch.version.cuda};py={sys.version_info[:2]};"
    extra += " ".join(CXX_FLAGS + OPENMP_FLAGS + CUDA_FLAGS) + (cuda_arch_list() if kind == "cuda" else "")
    return cache_root() / "ext" / f"{kind}-{_digest(SOURCES[kind] + HEADERS, SOURCE_DIR, extra)}"


def library_name(kind: str) -> str:
    return f"mmarnn_min_routing_{kind}"


@contextmanager
def _build_lock(directory: Path):
    """Hold an exclusive lock on ``directory``; the OS releases it if this process dies."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no fcntl; builds there are not serialised
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(kind: str) -> Path:
    """Compile (if needed) and load one library; return its path. Raises on failure."""
    if kind == "cuda" and not _loaded.get("cpu"):
        build("cpu")  # the CPU library defines the operators' schemas
    directory = build_directory(kind)
    library = directory / f"{library_name(kind)}.so"
    if not library.exists():
        with _build_lock(directory):
            if not library.exists():
                (directory / "lock").unlink(missing_ok=True)  # left by a build that was killed
                _compile(kind, directory)
    torch.ops.load_library(str(library))
    _loaded[kind] = True
    if kind == "cpu":
        _register_python_parts()
    return library


def _compile(kind: str, directory: Path) -> None:
    from torch.utils import cpp_extension

    if kind == "cuda":
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", cuda_arch_list())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cpp_extension's notes on compiler versions
        cpp_extension.load(
            name=library_name(kind),
            sources=[str(SOURCE_DIR / name) for name in SOURCES[kind]],
            extra_include_paths=[str(SOURCE_DIR)],
            extra_cflags=CXX_FLAGS + OPENMP_FLAGS,
            extra_cuda_cflags=CUDA_FLAGS,
            extra_ldflags=["-pthread", *OPENMP_FLAGS],
            build_directory=str(directory),
            with_cuda=kind == "cuda",
            is_python_module=False,
            verbose=os.environ.get("MMARNN_BUILD_VERBOSE") == "1",
        )


def load(device: torch.device | str | None = None, required: bool = False) -> bool:
    """Make the fused operators available for ``device`` (default: CPU). True when they are.

    On failure: with ``required`` raise, else warn once and return False (the caller then
    uses the fallback). ``MMARNN_BACKEND=fallback`` skips building altogether. For a CUDA
    device the answer is True only when the CUDA library is built and a GPU is there to run it.
    """
    if os.environ.get("MMARNN_BACKEND") == "fallback" and not required:
        return False
    device_type = torch.device(device).type if device is not None else "cpu"
    if device_type not in SOURCES:
        if required:
            raise RuntimeError(f"the masked-routing extension has no kernels for {device_type} tensors")
        return False
    if device_type == "cuda" and not torch.cuda.is_available():
        if required:
            raise RuntimeError("the CUDA masked-routing kernels need a CUDA device, and none is visible")
        return False
    for kind in ("cpu", device_type) if device_type == "cuda" else ("cpu",):
        if _loaded.get(kind):
            continue
        if kind not in _errors:
            try:
                build(kind)
            except Exception as error:  # compiler missing, compile error, ...
                _errors[kind] = f"{type(error).__name__}: {error}"
                if not required:
                    warnings.warn(
                        f"mmarnn_min: could not build the {kind} masked-routing extension, "
                        f"using the pure-PyTorch fallback. Reason: {_errors[kind]}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        if kind in _errors:
            if required:
                raise RuntimeError(f"the {kind} masked-routing extension is unavailable: {_errors[kind]}")
            return False
    return True


def build_selftest(source_dir: Path = SOURCE_DIR, sanitizer: str | None = None) -> Path:
    """Compile ``emulator_selftest.cpp`` (no PyTorch: the CUDA kernels through the emulator)
    from ``source_dir`` with the host C++ compiler (``$CXX``, else ``c++``), plainly or under
    ``sanitizer`` ("thread" or "address", the latter with UndefinedBehaviorSanitizer); return
    the program's path. Cached like the libraries; raises RuntimeError with the compiler's
    message when the build fails."""
    compiler = os.environ.get("CXX", "c++")
    flags = ["-std=c++17", "-O1", "-g", "-pthread", "-Wno-unknown-pragmas", *SANITIZERS[sanitizer]]
    names = (SELFTEST, "routing_kernels.cuh", "cuda_emulator.h")
    directory = cache_root() / "ext" / f"selftest-{_digest(names, Path(source_dir), compiler + ' '.join(flags))}"
    program = directory / "emulator_selftest"
    if not program.exists():
        with _build_lock(directory):
            if not program.exists():
                partial = directory / "emulator_selftest.partial"  # renamed once complete
                result = subprocess.run([compiler, *flags, str(Path(source_dir) / SELFTEST), "-o", str(partial)],
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"{compiler} could not build {SELFTEST}:\n{result.stderr[-4000:]}")
                partial.replace(program)
    return program


def copy_sources(destination: Path) -> Path:
    """Copy the sources into ``destination`` (to build a changed copy, e.g. with a bug planted)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in (*SOURCES["cpu"], *SOURCES["cuda"], *HEADERS, SELFTEST):
        shutil.copy(SOURCE_DIR / name, destination / name)
    return destination


def _register_python_parts() -> None:
    """Shapes for torch.compile (``register_fake``) and the gradients (``register_autograd``)
    of both operators: the fused one and the emulated CUDA one."""
    global _python_parts_registered
    if _python_parts_registered:
        return
    for forward, backward in (("masked_routing", "masked_routing_backward"),
                              ("masked_routing_emulated", "masked_routing_emulated_backward")):
        _register_operator(forward, backward)
    _python_parts_registered = True


def _register_operator(forward: str, backward: str) -> None:
    @torch.library.register_fake(f"mmarnn_min::{forward}")
    def _(h, lengths, weight, bias):
        return h.new_empty((h.shape[0], weight.shape[0]))

    @torch.library.register_fake(f"mmarnn_min::{backward}")
    def _(grad_out, h, lengths, weight, output_mask):
        grad_h = torch.empty_like(h) if output_mask[0] else h.new_empty(0)
        grad_weight = h.new_empty(weight.shape) if output_mask[1] else h.new_empty(0)
        return grad_h, grad_weight

    backward_op = getattr(torch.ops.mmarnn_min, backward)

    def setup_context(ctx, inputs, output):
        h, lengths, weight, bias = inputs
        ctx.save_for_backward(h, lengths, weight)
        ctx.has_bias = bias is not None

    def gradients(ctx, grad_out):
        h, lengths, weight = ctx.saved_tensors
        want_h, _, want_weight, want_bias = ctx.needs_input_grad
        grad_h = grad_weight = None
        if want_h or want_weight:  # only what autograd asks for is computed
            grad_h, grad_weight = backward_op(grad_out.contiguous(), h, lengths, weight, [want_h, want_weight])
        grad_bias = grad_out.sum(0) if ctx.has_bias and want_bias else None
        return grad_h if want_h else None, None, grad_weight if want_weight else None, grad_bias

    torch.library.register_autograd(f"mmarnn_min::{forward}", gradients, setup_context=setup_context)

"""Builds and loads the fused masked-routing operator (``mmarnn_min/csrc``) on first use.

Two shared libraries, each compiled once per machine with ``torch.utils.cpp_extension.load``:

* ``cpu``:  ``masked_routing.cpp``, the operator's schema (``TORCH_LIBRARY(mmarnn_min, ...)``)
  and its CPU kernels. Built whenever the extension is used.
* ``cuda``: ``masked_routing_cuda.cu``, the CUDA kernels (``TORCH_LIBRARY_IMPL(..., CUDA, ...)``).
  Built when a CUDA tensor meets the operator (or on request: the tests compile it on machines
  without a GPU so that a CUDA compile error is caught there too).

Each build goes into ``<cache>/ext/<kind>-<key>`` where the key hashes the sources, the torch,
CUDA and Python versions and the target architectures, so a new process imports the library
already built instead of re-running ninja, and a change of any of those rebuilds. A build is
serialised by an OS file lock that dies with its process; while holding it we remove the
``lock`` file that ``load()`` leaves behind when a build is killed half-way (otherwise every
later ``load()`` would wait on it forever).

``load()`` never raises by default: when the extension cannot be built it warns once, with
the compiler's message, and ``mmarnn_min.routing`` uses the pure-PyTorch fallback.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from mmarnn_min.cache import cache_root

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = {
    "cpu": ("masked_routing.cpp",),
    "cuda": ("masked_routing_cuda.cu",),
}
HEADERS = ("masked_routing.h",)
CXX_FLAGS = ["-O3"]
CUDA_FLAGS = ["-O3"]
DEFAULT_CUDA_ARCHS = "8.0;9.0"  # when no GPU is visible to name the target

_loaded: dict[str, bool] = {}       # kind -> the library is loaded in this process
_errors: dict[str, str] = {}        # kind -> why it could not be built or loaded
_python_parts_registered = False


def cuda_arch_list() -> str:
    """The CUDA architectures to compile for: ``TORCH_CUDA_ARCH_LIST``, else the visible
    GPUs', else ``DEFAULT_CUDA_ARCHS``."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(capabilities))
    return DEFAULT_CUDA_ARCHS


def build_directory(kind: str) -> Path:
    """``<cache>/ext/<kind>-<key>``: the key changes with anything that changes the binary."""
    digest = hashlib.sha256()
    for name in SOURCES[kind] + HEADERS:
        digest.update(name.encode())
        digest.update((SOURCE_DIR / name).read_bytes())
    digest.update(f"torch={torch.__version__};cuda={torch.version.cuda};py={sys.version_info[:2]}".encode())
    digest.update(" ".join(CXX_FLAGS + CUDA_FLAGS).encode())
    if kind == "cuda":
        digest.update(cuda_arch_list().encode())
    return cache_root() / "ext" / f"{kind}-{digest.hexdigest()[:16]}"


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
        build("cpu")  # the CPU library defines the operator's schema
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
            extra_cflags=CXX_FLAGS,
            extra_cuda_cflags=CUDA_FLAGS,
            build_directory=str(directory),
            with_cuda=kind == "cuda",
            is_python_module=False,
            verbose=os.environ.get("MMARNN_BUILD_VERBOSE") == "1",
        )


def load(device: torch.device | str | None = None, required: bool = False) -> bool:
    """Make the fused operator available for ``device`` (default: CPU). True when it is.

    On failure: with ``required`` raise, else warn once and return False (the caller then
    uses the fallback). ``MMARNN_BACKEND=fallback`` skips building altogether.
    """
    if os.environ.get("MMARNN_BACKEND") == "fallback" and not required:
        return False
    device_type = torch.device(device).type if device is not None else "cpu"
    if device_type not in SOURCES:
        if required:
            raise RuntimeError(f"the masked-routing extension has no kernels for {device_type} tensors")
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


def _register_python_parts() -> None:
    """Shapes for torch.compile (``register_fake``) and the gradient (``register_autograd``)."""
    global _python_parts_registered
    if _python_parts_registered:
        return

    @torch.library.register_fake("mmarnn_min::masked_routing")
    def _(h, lengths, weight, bias):
        return h.new_empty((h.shape[0], weight.shape[0]))

    @torch.library.register_fake("mmarnn_min::masked_routing_backward")
    def _(grad_out, h, lengths, weight):
        return torch.empty_like(h), torch.empty_like(weight)

    def setup_context(ctx, inputs, output):
        h, lengths, weight, bias = inputs
        ctx.save_for_backward(h, lengths, weight)
        ctx.has_bias = bias is not None

    def backward(ctx, grad_out):
        h, lengths, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_h, grad_weight = torch.ops.mmarnn_min.masked_routing_backward(grad_out, h, lengths, weight)
        grad_bias = grad_out.sum(0) if ctx.has_bias else None
        return grad_h, None, grad_weight, grad_bias

    torch.library.register_autograd("mmarnn_min::masked_routing", backward, setup_context=setup_context)
    _python_parts_registered = True

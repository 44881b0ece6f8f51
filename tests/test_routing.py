"""The laws of masked routing (docs/design.md), for every backend on every device here.

Reference: ``masked_routing_reference``, the loop read straight off the definition
    out[b] = bias + sum_{t < lengths[b]} weight[:, t*D:(t+1)*D] @ h[b, t]

The backend "cuda_emulator" runs the CUDA kernels on the CPU; its cases are drawn large enough
to need several blocks of every kernel: more than one tile of 64 videos and of 32 features
(F not a multiple of 32), several K slices and several blocks of 128 columns.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from mmarnn_min import extension
from mmarnn_min.routing import (
    available_backends,
    masked_routing,
    masked_routing_fallback,
    masked_routing_reference,
    route,
)

ON_GPU = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=ON_GPU)]
BACKENDS = ["extension", "fallback", "cuda_emulator"]
BACKEND_DEVICES = [
    pytest.param(backend, device, marks=ON_GPU, id=f"{backend}-cuda") if device == "cuda"
    else pytest.param(backend, device, id=f"{backend}-cpu")
    for device in ("cpu", "cuda") for backend in BACKENDS
    if not (backend == "cuda_emulator" and device == "cuda")
]
EMULATOR_EXAMPLES = 12  # each of its cases runs ~100 blocks of 128 OS threads


def on_gpu(test):
    """Marks a test that needs a CUDA device (``pytest -m cuda`` runs them all)."""
    for mark in ON_GPU:
        test = mark(test)
    return test


def make_case(batch, frames, width, features, lengths, with_bias, sliced=False, dtype=torch.float64,
              device="cpu", seed=0):
    """h, lengths, weight, bias; with ``sliced``, weight is a column slice of a wider matrix
    (its rows lie further apart than T*D), as MRNN passes it."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, frames, width, generator=gen, dtype=dtype).to(device)
    wide = torch.randn(features, frames * width + (3 if sliced else 0), generator=gen, dtype=dtype).to(device)
    bias = torch.randn(features, generator=gen, dtype=dtype).to(device) if with_bias else None
    return h, torch.tensor(lengths, dtype=torch.int64, device=device), wide[:, :frames * width], bias


@st.composite
def cases(draw, batch=(1, 5), frames=(1, 7), width=(1, 4), features=(1, 4)):
    batch_size = draw(st.integers(*batch))
    frame_count = draw(st.integers(*frames))
    lengths = draw(st.lists(st.integers(0, frame_count), min_size=batch_size, max_size=batch_size))
    return dict(batch=batch_size, frames=frame_count, width=draw(st.integers(*width)),
                features=draw(st.integers(*features)), lengths=lengths, with_bias=draw(st.booleans()),
                sliced=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def cases_for(backend, **bounds):
    """Small cases; for the emulator, cases that need several blocks of every kernel."""
    if backend == "cuda_emulator":
        return cases(batch=(65, 72), frames=(9, 16), width=(15, 20), features=(33, 40))
    return cases(**bounds)


def law(backend, examples, **bounds):
    """Run the decorated law on Hypothesis cases drawn by ``cases_for(backend)``."""
    def decorate(check):
        count = min(examples, EMULATOR_EXAMPLES) if backend == "cuda_emulator" else examples
        return settings(max_examples=count, deadline=None)(given(case=cases_for(backend, **bounds))(check))
    return decorate


def gradients(fn, h, lengths, weight, bias, grad_out):
    """out and the gradients of h, weight and bias (zeros where none flows), from fresh leaves
    with the inputs' strides (a column-sliced weight stays one)."""
    leaf = lambda x: torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device).copy_(x).requires_grad_()
    inputs = [leaf(x) for x in (h, weight, bias) if x is not None]
    out = fn(inputs[0], lengths, inputs[1], inputs[2] if bias is not None else None)
    grads = torch.autograd.grad(out, inputs, grad_out, allow_unused=True) if out.requires_grad else [None] * len(inputs)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    return out.detach(), grads[0], grads[1], grads[2] if bias is not None else None


def run_backend(backend):
    return lambda h, lengths, weight, bias: masked_routing(h, lengths, weight, bias, backend=backend)


def test_cpu_extension_builds():
    """The CPU extension must build wherever the tests run (CI included): a compile error is red."""
    assert extension.load("cpu", required=True)
    assert available_backends() == ["extension", "fallback", "cuda_emulator"]
    assert available_backends("cpu") == available_backends()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_no_backend_claims_a_missing_gpu():
    assert available_backends("cuda") == []
    with pytest.raises(RuntimeError, match="need a CUDA device"):
        extension.load("cuda", required=True)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_agrees_with_the_reference_float64(backend, device):
    @law(backend, 60)
    def check(case):
        h, lengths, weight, bias = make_case(**case, device=device)
        grad_out = torch.randn(h.shape[0], weight.shape[0], dtype=h.dtype, device=device)
        got = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
        want = gradients(masked_routing_reference, h, lengths, weight, bias, grad_out)
        for g, w in zip(got, want):
            if w is None:
                assert g is None
            else:
                torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    check()


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_float32_within_the_rounding_bound(backend, device):
    """float32 against float64 within the classical bound of a length-n sum,
    |fl(s) - s| <= n * eps * sum_i |x_i|, with n = T*D + 1 terms (bias included)."""
    @law(backend, 40, frames=(1, 40), width=(1, 16), features=(1, 40))
    def check(case):
        h, lengths, weight, bias = make_case(**case, device=device)
        exact = masked_routing_reference(h, lengths, weight, bias)
        magnitude = masked_routing_reference(h.abs(), lengths, weight.abs(), bias.abs() if bias is not None else None)
        bound = (h.shape[1] * h.shape[2] + 1) * torch.finfo(torch.float32).eps * magnitude + 1e-30
        to32 = (lambda t: t.float() if t is not None else None)
        got = masked_routing(to32(h), lengths, to32(weight), to32(bias), backend=backend).double()
        assert torch.all((got - exact).abs() <= bound)
    check()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_16_bit_inputs_are_summed_in_float32(backend, device, dtype):
    """float16 / bfloat16 in, the same dtype out; the output and the three gradients are the
    float64 values of the (rounded) inputs within the error of a float32 sum of n terms
    (n * eps32 * sum |x_i|) plus one final rounding to the 16-bit dtype."""
    @law(backend, 25, frames=(1, 20), width=(1, 16), features=(1, 40))
    def check(case):
        h, lengths, weight, bias = make_case(**case, dtype=dtype, device=device)
        gen = torch.Generator().manual_seed(case["seed"])
        grad_out = torch.randn(h.shape[0], weight.shape[0], generator=gen).to(device, dtype)
        got = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
        as64 = lambda t: None if t is None else t.double()
        exact = gradients(masked_routing_reference, as64(h), lengths, as64(weight), as64(bias), as64(grad_out))
        absolute = gradients(masked_routing_reference, h.double().abs(), lengths, weight.double().abs(),
                             None if bias is None else bias.double().abs(), grad_out.double().abs())
        batch, frames, width = h.shape
        terms = {"out": frames * width + 1, "grad_h": weight.shape[0], "grad_weight": batch, "grad_bias": batch}
        for name, g, e, a in zip(terms, got, exact, absolute):
            if e is None:
                continue
            assert g.dtype == dtype, name
            info = torch.finfo(dtype)  # the last term: the spacing of subnormal numbers
            bound = terms[name] * torch.finfo(torch.float32).eps * a + info.eps * e.abs() + info.tiny * info.eps
            assert torch.all((g.double() - e).abs() <= bound), name
    check()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("backend", ["extension", "cuda_emulator"])
def test_gradcheck(device, with_bias, backend):
    if backend == "cuda_emulator" and device == "cuda":
        pytest.skip("the emulator runs on CPU tensors")
    h, lengths, weight, bias = make_case(3, 5, 2, 3, [5, 0, 2], with_bias, sliced=True, device=device)
    inputs = [h.requires_grad_(), lengths, weight.detach().requires_grad_()]
    if with_bias:
        inputs.append(bias.requires_grad_())
    fn = lambda h, lengths, weight, bias=None: masked_routing(h, lengths, weight, bias, backend=backend)
    assert torch.autograd.gradcheck(fn, tuple(inputs))


@pytest.mark.parametrize("operator", ["masked_routing", "masked_routing_emulated"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths", [[4, 0, 2], [0, 0, 0], [4, 4, 4]])
def test_opcheck(device, lengths, operator):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch."""
    if operator == "masked_routing_emulated" and device == "cuda":
        pytest.skip("the emulator runs on CPU tensors")
    extension.load(device, required=True)
    h, lengths, weight, bias = make_case(3, 4, 3, 2, lengths, True, dtype=torch.float32, device=device)
    op = getattr(torch.ops.mmarnn_min, operator).default
    torch.library.opcheck(op, (h.requires_grad_(), lengths, weight.requires_grad_(), bias.requires_grad_()))
    torch.library.opcheck(op, (h, lengths, weight, None))
    grad_out = torch.randn(3, 2, device=device)
    backward = getattr(torch.ops.mmarnn_min, f"{operator}_backward").default
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(backward, (grad_out, h.detach(), lengths, weight.detach(), mask))


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_padding_gets_no_value_and_no_gradient(backend, device):
    """Padded frames: the output and every gradient are unchanged (bit for bit) whatever they
    hold, NaN and inf included, and their own gradient is exactly zero."""
    @law(backend, 40)
    def check(case):
        h, lengths, weight, bias = make_case(**case, device=device)
        grad_out = torch.randn(h.shape[0], weight.shape[0], dtype=h.dtype, device=device)
        padded = torch.arange(h.shape[1], device=device)[None, :] >= lengths[:, None]  # (B, T)
        for junk in (float("nan"), float("inf"), -1e30):
            h_junk = torch.where(padded[:, :, None], torch.full_like(h, junk), h)
            clean = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
            dirty = gradients(run_backend(backend), h_junk, lengths, weight, bias, grad_out)
            for a, b in zip(clean, dirty):
                assert (a is None and b is None) or torch.equal(a, b)
        grad_h = clean[1]
        assert torch.equal(grad_h[padded], torch.zeros_like(grad_h[padded]))
    check()


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_unreached_weight_columns_get_exactly_zero_gradient(backend, device):
    @law(backend, 40)
    def check(case):
        h, lengths, weight, bias = make_case(**case, device=device)
        grad_out = torch.randn(h.shape[0], weight.shape[0], dtype=h.dtype, device=device)
        grad_weight = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)[2]
        reached = int(lengths.max()) * h.shape[2]
        assert torch.equal(grad_weight[:, reached:], torch.zeros_like(grad_weight[:, reached:]))
    check()


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_a_sample_does_not_depend_on_the_rest_of_the_batch(backend, device):
    @law(backend, 40, batch=(1, 6))
    def check(case):
        h, lengths, weight, bias = make_case(**case, device=device)
        together = masked_routing(h, lengths, weight, bias, backend=backend)
        samples = range(h.shape[0]) if backend != "cuda_emulator" else (0, 1, h.shape[0] - 1)
        for b in samples:
            alone = masked_routing(h[b:b + 1], lengths[b:b + 1], weight, bias, backend=backend)
            torch.testing.assert_close(together[b:b + 1], alone, rtol=1e-12, atol=1e-12)
    check()


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_edge_cases_lengths_zero_and_full_and_single_sample(backend, device):
    h, lengths, weight, bias = make_case(1, 3, 2, 2, [3], True, device=device)
    torch.testing.assert_close(masked_routing(h, lengths, weight, bias, backend=backend),
                               (weight @ h.reshape(-1) + bias)[None])
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    torch.testing.assert_close(masked_routing(h, zero, weight, bias, backend=backend), bias[None])
    torch.testing.assert_close(masked_routing(h, zero, weight, None, backend=backend),
                               torch.zeros(1, 2, dtype=h.dtype, device=device))
    empty = masked_routing(h[:0], lengths[:0], weight, bias, backend=backend)
    assert empty.shape == (0, 2)
    no_features = masked_routing(h, lengths, weight[:0], bias[:0], backend=backend)
    assert no_features.shape == (1, 0)
    grad_h, = torch.autograd.grad(masked_routing(h.requires_grad_(), lengths, weight[:0], None, backend=backend).sum(), h)
    assert torch.equal(grad_h, torch.zeros_like(h))


@pytest.mark.parametrize("backend, device", [p for p in BACKEND_DEVICES if p.values[0] != "fallback"])
def test_many_features(backend, device):
    """F = 1600, more than one block of features and a backward whose grad_h sums beyond the
    32 features a block holds in registers: forward and backward as the reference."""
    h, lengths, weight, bias = make_case(3, 2, 3, 1600, [2, 1, 0], True, device=device)
    grad_out = torch.randn(3, 1600, dtype=h.dtype, device=device)
    got = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
    want = gradients(masked_routing_reference, h, lengths, weight, bias, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend, device", [p for p in BACKEND_DEVICES if p.values[0] != "fallback"])
def test_several_blocks_and_partial_tiles(backend, device, dtype):
    """K = T*D = 2479 (two CPU blocks of 2048 columns, the second partial), D = 67 (no video ends
    on a SIMD boundary), B = 11 and F = 9 (partial tiles of videos and of features), lengths
    from 0 to T: forward and backward as the reference, and exact zeros past each video."""
    lengths = [37, 0, 1, 30, 37, 12, 31, 2, 36, 29, 17]
    h, lengths, weight, bias = make_case(11, 37, 67, 9, lengths, True, sliced=True, dtype=dtype, device=device)
    grad_out = torch.randn(11, 9, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(device)
    got = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
    want = gradients(masked_routing_reference, h.double(), lengths, weight.double(), bias.double(), grad_out.double())
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=tolerance, atol=tolerance)
    padded = torch.arange(37, device=device)[None, :] >= lengths[:, None]  # (B, T)
    assert torch.equal(got[1][padded], torch.zeros_like(got[1][padded]))


CPU_KERNELS = ["avx512", "avx2", "baseline"]
LAWS = ("reference_float64 or rounding_bound or 16_bit or padding or unreached or does_not_depend "
        "or edge_cases or many_features or several_blocks")


def test_cpu_kernels_follow_the_environment():
    """MMARNN_CPU_KERNELS, when set, names the compilation the CPU kernels run."""
    extension.load("cpu", required=True)
    wanted = os.environ.get("MMARNN_CPU_KERNELS")
    assert torch.ops.mmarnn_min.cpu_kernels() in ([wanted] if wanted else CPU_KERNELS)


@pytest.mark.skipif(bool(os.environ.get("MMARNN_CPU_KERNELS")), reason="already inside a run of one compilation")
@pytest.mark.parametrize("kind", CPU_KERNELS)
def test_every_cpu_compilation_obeys_the_laws(kind):
    """The CPU kernels are compiled once per kind of x86-64 CPU, each with its own tiles, and a
    process runs the most capable one its CPU has (the one every other test here holds to the
    laws). Each lower one this CPU can run is held to them too, in a process of its own started
    with MMARNN_CPU_KERNELS=kind (the choice is made once per process)."""
    extension.load("cpu", required=True)
    native = torch.ops.mmarnn_min.cpu_kernels()
    if CPU_KERNELS.index(kind) <= CPU_KERNELS.index(native):
        pytest.skip(f"{kind} is {'this process' if kind == native else 'beyond this CPU'}")
    env = {**os.environ, "MMARNN_CPU_KERNELS": kind}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
               "-k", f"extension-cpu and ({LAWS}) or follow_the_environment"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


def test_route_is_the_mask_layer():
    h = torch.arange(12.0).reshape(2, 3, 2)
    routed = route(h, torch.tensor([1, 3]))
    assert torch.equal(routed, torch.tensor([[0.0, 1, 0, 0, 0, 0], [6, 7, 8, 9, 10, 11]]))
    torch.testing.assert_close(masked_routing_fallback(h, torch.tensor([1, 3]), torch.eye(6)), routed)


# ---- what the operators are given and asked: no copy of a column slice, only wanted gradients ----

class RecordOperatorCalls(TorchDispatchMode):
    """Records every mmarnn_min operator call (name, args) that reaches the dispatcher."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "mmarnn_min":
            self.calls.append((func.__name__.split(".")[0], args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["extension", "cuda_emulator"])
def test_a_column_sliced_weight_reaches_the_operator_uncopied(backend):
    h, lengths, weight, bias = make_case(2, 3, 4, 5, [3, 1], True, sliced=True, dtype=torch.float32)
    assert not weight.is_contiguous()
    with RecordOperatorCalls() as recorder:
        masked_routing(h, lengths, weight, bias, backend=backend)
    (name, args), = recorder.calls
    assert args[2].data_ptr() == weight.data_ptr() and args[2].stride() == weight.stride()


@pytest.mark.parametrize("backend", ["extension", "cuda_emulator"])
@pytest.mark.parametrize("wanted", ["h", "weight", "both"])
def test_backward_computes_only_the_gradients_autograd_asks_for(backend, wanted):
    h, lengths, weight, bias = make_case(2, 3, 4, 5, [3, 1], False, dtype=torch.float32)
    h.requires_grad_(wanted in ("h", "both"))
    weight.requires_grad_(wanted in ("weight", "both"))
    out = masked_routing(h, lengths, weight, bias, backend=backend)
    with RecordOperatorCalls() as recorder:
        out.sum().backward()
    (name, args), = recorder.calls
    assert name.endswith("backward")
    assert list(args[4]) == [wanted in ("h", "both"), wanted in ("weight", "both")]


# ---- no host synchronisation: torch.compile(fullgraph=True), CUDA graphs ----

@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_compiles_to_one_graph_forward_and_backward(backend, device):
    """fullgraph=True fails on any graph break, such as reading a length on the host."""
    torch._dynamo.reset()
    h, lengths, weight, bias = make_case(4, 6, 3, 5, [6, 4, 1, 0], True, sliced=True, device=device)
    compiled = torch.compile(lambda h, lengths, weight, bias: masked_routing(h, lengths, weight, bias, backend=backend),
                             fullgraph=True)
    grad_out = torch.randn(4, 5, dtype=h.dtype, device=device)
    got = gradients(compiled, h, lengths, weight, bias, grad_out)
    want = gradients(masked_routing_reference, h, lengths, weight, bias, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    if device == "cpu":  # (on a GPU the error is a device-side assert, which ends the CUDA context)
        with pytest.raises(RuntimeError, match=r"every length must lie in \[0, T\]"):
            compiled(h, torch.tensor([7, 4, 1, 0]), weight, bias)


@on_gpu
@pytest.mark.parametrize("backend", ["extension", "fallback"])
def test_captured_in_a_cuda_graph(backend):
    """Forward and backward replay from a CUDA graph (which forbids any host synchronisation)
    and give the eager results for new inputs copied into the captured ones."""
    h, lengths, weight, bias = make_case(6, 8, 4, 5, [8, 3, 0, 5, 8, 1], True, sliced=True,
                                         dtype=torch.float32, device="cuda")
    h.requires_grad_()
    leaf = weight.detach().clone().requires_grad_()
    grad_out = torch.randn(6, 5, device="cuda")

    def step():
        out = masked_routing(h, lengths, leaf, bias, backend=backend)
        return (out, *torch.autograd.grad(out, (h, leaf), grad_out))

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm up outside the capture (allocations, library loading)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        h.copy_(torch.randn_like(h))
        lengths.copy_(torch.tensor([2, 8, 8, 0, 4, 7], device="cuda"))
    graph.replay()
    eager = step()
    for a, b in zip(captured, eager):
        torch.testing.assert_close(a, b)


# ---- autocast ----

@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_in_bfloat16_under_cpu_autocast(backend):
    h, lengths, weight, bias = make_case(3, 5, 4, 6, [5, 2, 0], True, sliced=True, dtype=torch.float32)
    h.requires_grad_()
    weight = weight.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_routing(h, lengths, weight, bias, backend=backend)
    assert out.dtype == torch.bfloat16
    as16 = lambda t: t.detach().to(torch.bfloat16)
    torch.testing.assert_close(out, masked_routing(as16(h), lengths, as16(weight), as16(bias), backend=backend))
    out.float().sum().backward()
    assert h.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32


@pytest.mark.parametrize("operator", ["masked_routing", "masked_routing_emulated"])
def test_the_operators_are_registered_for_autocast(operator):
    extension.load("cpu", required=True)
    h, lengths, weight, bias = make_case(3, 5, 4, 6, [5, 2, 0], True, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = getattr(torch.ops.mmarnn_min, operator)(h, lengths, weight, bias)
    assert out.dtype == torch.bfloat16


# ---- invalid inputs: a clear error naming the problem, from the public function and the raw op ----

def good_inputs(device="cpu"):
    return make_case(2, 3, 2, 4, [3, 1], True, dtype=torch.float32, device=device)


INVALID = {
    "length above T": (lambda h, l, w, b: (h, torch.tensor([4, 1]), w, b), ValueError, r"\[0, T\] = \[0, 3\], got 4"),
    "negative length": (lambda h, l, w, b: (h, torch.tensor([-1, 1]), w, b), ValueError, r"got -1"),
    "lengths int32": (lambda h, l, w, b: (h, l.int(), w, b), TypeError, "lengths must be int64"),
    "lengths wrong size": (lambda h, l, w, b: (h, l[:1], w, b), ValueError, r"lengths must be a \(2,\)"),
    "h int64": (lambda h, l, w, b: (h.long(), l, w.long(), b.long()), TypeError, "float64, float32, float16 or bfloat16"),
    "h 2-D": (lambda h, l, w, b: (h[0], l, w, b), ValueError, r"h must be a \(B, T, D\)"),
    "weight too narrow": (lambda h, l, w, b: (h, l, w[:, :-1], b), ValueError, r"weight must be \(F, T\*D\) = \(F, 6\)"),
    "weight dtype": (lambda h, l, w, b: (h, l, w.double(), b), TypeError, "weight dtype"),
    "bias size": (lambda h, l, w, b: (h, l, w, b[:-1]), ValueError, r"bias must be \(4,\)"),
    "bias dtype": (lambda h, l, w, b: (h, l, w, b.double()), TypeError, "bias dtype"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_inputs_raise_a_clear_error(name, backend):
    make, error, message = INVALID[name]
    with pytest.raises(error, match=message):
        masked_routing(*make(*good_inputs()), backend=backend)


def test_an_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend must be one of auto, extension, fallback, cuda_emulator; got 'cublas'"):
        masked_routing(*good_inputs(), backend="cublas")


RAW_INVALID = {
    "length above T": (lambda h, l, w, b: (h, torch.tensor([4, 1]), w, b), r"\[0, T\] = \[0, 3\], got 4"),
    "negative length": (lambda h, l, w, b: (h, torch.tensor([-1, 1]), w, b), r"got -1"),
    "lengths int32": (lambda h, l, w, b: (h, l.int(), w, b), "lengths must be int64"),
    "lengths wrong size": (lambda h, l, w, b: (h, l[:1], w, b), r"lengths must be \(B,\) = \(2,\)"),
    "h int64": (lambda h, l, w, b: (h.long(), l, w.long(), b.long()), "float64, float32, float16 or bfloat16"),
    "h 2-D": (lambda h, l, w, b: (h[0], l, w, b), r"h must be \(B, T, D\)"),
    "h not contiguous": (lambda h, l, w, b: (h.transpose(0, 1).contiguous().transpose(0, 1), l, w, b),
                         "h must be contiguous"),
    "weight columns strided": (lambda h, l, w, b: (h, l, w.t().contiguous().t(), b), "weight's rows must be contiguous"),
    "weight too narrow": (lambda h, l, w, b: (h, l, w[:, :-1].contiguous(), b), r"weight must be \(F, T\*D\)"),
    "weight dtype": (lambda h, l, w, b: (h, l, w.double(), b), "weight has dtype"),
    "bias size": (lambda h, l, w, b: (h, l, w, b[:-1].contiguous()), r"bias must be \(F,\) = \(4,\)"),
}


@pytest.mark.parametrize("operator", ["masked_routing", "masked_routing_emulated"])
@pytest.mark.parametrize("name", list(RAW_INVALID))
def test_the_operator_checks_its_inputs_before_touching_memory(name, operator):
    """The CPU operator reads the lengths first and names a bad one; the emulated CUDA one
    cannot read them on the host: its kernels clamp them (so nothing is read out of bounds)
    and raise a device-side assert."""
    extension.load("cpu", required=True)
    make, message = RAW_INVALID[name]
    if operator == "masked_routing_emulated" and "length" in name and "lengths" not in name:
        message = r"device-side assert .* every length must lie in \[0, T\]"
    with pytest.raises(RuntimeError, match=message):
        getattr(torch.ops.mmarnn_min, operator)(*make(*good_inputs()))


@pytest.mark.parametrize("operator", ["masked_routing_backward", "masked_routing_emulated_backward"])
def test_backward_operator_checks_grad_out(operator):
    extension.load("cpu", required=True)
    h, lengths, weight, _ = good_inputs()
    with pytest.raises(RuntimeError, match=r"grad_out must be \(B, F\) = \(2, 4\)"):
        getattr(torch.ops.mmarnn_min, operator)(torch.zeros(2, 3), h, lengths, weight, [True, True])


@on_gpu
def test_device_mismatch_is_named():
    h, lengths, weight, bias = good_inputs("cuda")
    with pytest.raises(ValueError, match="weight is on cpu but h is on cuda"):
        masked_routing(h, lengths, weight.cpu(), bias)
    with pytest.raises(RuntimeError, match="lengths is on cpu"):
        torch.ops.mmarnn_min.masked_routing(h, lengths.cpu(), weight, bias)
    with pytest.raises(ValueError, match="cuda_emulator backend runs on CPU tensors"):
        masked_routing(h, lengths, weight, bias, backend="cuda_emulator")


# ---- backend choice ----

def test_backend_switch_by_argument_and_environment(monkeypatch):
    h, lengths, weight, bias = good_inputs()
    calls = []
    monkeypatch.setattr(torch.ops.mmarnn_min, "masked_routing", lambda *a: calls.append(a) or a[0][:, 0, :1])
    monkeypatch.setenv("MMARNN_BACKEND", "fallback")
    masked_routing(h, lengths, weight, bias)
    assert calls == []
    monkeypatch.setenv("MMARNN_BACKEND", "extension")
    masked_routing(h, lengths, weight, bias)
    assert len(calls) == 1


@on_gpu
def test_lengths_may_live_on_the_cpu_for_cuda_tensors():
    h, lengths, weight, bias = good_inputs("cuda")
    torch.testing.assert_close(masked_routing(h, lengths.cpu(), weight, bias), masked_routing(h, lengths, weight, bias))

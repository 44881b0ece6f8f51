"""The laws of masked routing (DESIGN section 2), for every backend on every device here.

Reference: ``masked_routing_reference``, the loop read straight off the definition
    out[b] = bias + sum_{t < lengths[b]} weight[:, t*D:(t+1)*D] @ h[b, t]
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmarnn_min import extension
from mmarnn_min.routing import (available_backends, masked_routing, masked_routing_fallback,
                                masked_routing_reference, route)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
BACKENDS = ["extension", "fallback"]


def make_case(batch, frames, width, features, lengths, with_bias, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, frames, width, generator=gen, dtype=dtype).to(device)
    weight = torch.randn(features, frames * width, generator=gen, dtype=dtype).to(device)
    bias = torch.randn(features, generator=gen, dtype=dtype).to(device) if with_bias else None
    return h, torch.tensor(lengths, dtype=torch.int64, device=device), weight, bias


@st.composite
def cases(draw, max_batch=5, max_frames=7, max_width=4, max_features=4):
    batch = draw(st.integers(1, max_batch))
    frames = draw(st.integers(1, max_frames))
    lengths = draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch))
    return dict(
        batch=batch,
        frames=frames,
        width=draw(st.integers(1, max_width)),
        features=draw(st.integers(1, max_features)),
        lengths=lengths,
        with_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def gradients(fn, h, lengths, weight, bias, grad_out):
    h = h.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    bias = bias.detach().clone().requires_grad_() if bias is not None else None
    out = fn(h, lengths, weight, bias)
    if out.requires_grad:
        out.backward(grad_out)
    grad = lambda x: None if x is None else (x.grad if x.grad is not None else torch.zeros_like(x))
    return out.detach(), grad(h), grad(weight), grad(bias)


def run_backend(backend):
    return lambda h, lengths, weight, bias: masked_routing(h, lengths, weight, bias, backend=backend)


def test_cpu_extension_builds():
    """The CPU extension must build wherever the tests run (CI included): a compile error is red."""
    assert extension.load("cpu", required=True)
    assert available_backends() == ["extension", "fallback"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_agrees_with_the_reference_float64(case, backend, device):
    h, lengths, weight, bias = make_case(**case, device=device)
    grad_out = torch.randn(h.shape[0], weight.shape[0], dtype=h.dtype, device=device)
    got = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
    want = gradients(masked_routing_reference, h, lengths, weight, bias, grad_out)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(case=cases(max_frames=40, max_width=16, max_features=40))
def test_float32_within_the_rounding_bound(case, device):
    """float32 against float64 within the classical bound of a length-n sum,
    |fl(s) - s| <= n * eps * sum_i |x_i|, with n = T*D + 1 terms (bias included)."""
    h, lengths, weight, bias = make_case(**case, device=device)
    exact = masked_routing_reference(h, lengths, weight, bias)
    magnitude = masked_routing_reference(h.abs(), lengths, weight.abs(), bias.abs() if bias is not None else None)
    terms = h.shape[1] * h.shape[2] + 1
    bound = terms * torch.finfo(torch.float32).eps * magnitude + 1e-30
    to32 = (lambda t: t.float() if t is not None else None)
    for backend in BACKENDS:
        got = masked_routing(to32(h), lengths, to32(weight), to32(bias), backend=backend).double()
        assert torch.all((got - exact).abs() <= bound), backend


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradcheck(device, with_bias):
    h, lengths, weight, bias = make_case(3, 5, 2, 3, [5, 0, 2], with_bias, device=device)
    inputs = [h.requires_grad_(), lengths, weight.requires_grad_()]
    if with_bias:
        inputs.append(bias.requires_grad_())
    fn = lambda h, lengths, weight, bias=None: masked_routing(h, lengths, weight, bias, backend="extension")
    assert torch.autograd.gradcheck(fn, tuple(inputs))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths", [[4, 0, 2], [0, 0, 0], [4, 4, 4]])
def test_opcheck(device, lengths):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch."""
    extension.load(device, required=True)
    h, lengths, weight, bias = make_case(3, 4, 3, 2, lengths, True, dtype=torch.float32, device=device)
    op = torch.ops.mmarnn_min.masked_routing.default
    torch.library.opcheck(op, (h.requires_grad_(), lengths, weight.requires_grad_(), bias.requires_grad_()))
    torch.library.opcheck(op, (h, lengths, weight, None))
    grad_out = torch.randn(3, 2, device=device)
    torch.library.opcheck(torch.ops.mmarnn_min.masked_routing_backward.default,
                          (grad_out, h.detach(), lengths, weight.detach()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(case=cases(), junk=st.sampled_from([float("nan"), float("inf"), -1e30, 7.0]))
def test_padding_gets_no_value_and_no_gradient(case, junk, backend, device):
    """Padded frames: the output and every gradient are unchanged (bit for bit) whatever they
    hold, NaN and inf included, and their own gradient is exactly zero."""
    h, lengths, weight, bias = make_case(**case, device=device)
    grad_out = torch.randn(h.shape[0], weight.shape[0], dtype=h.dtype, device=device)
    padded = torch.arange(h.shape[1], device=device)[None, :] >= lengths[:, None]  # (B, T)
    h_junk = torch.where(padded[:, :, None], torch.full_like(h, junk), h)
    clean = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)
    dirty = gradients(run_backend(backend), h_junk, lengths, weight, bias, grad_out)
    for a, b in zip(clean, dirty):
        assert (a is None and b is None) or torch.equal(a, b)
    grad_h = clean[1]
    assert torch.equal(grad_h[padded], torch.zeros_like(grad_h[padded]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_unreached_weight_columns_get_exactly_zero_gradient(case, backend, device):
    h, lengths, weight, bias = make_case(**case, device=device)
    grad_out = torch.randn(h.shape[0], weight.shape[0], dtype=h.dtype, device=device)
    grad_weight = gradients(run_backend(backend), h, lengths, weight, bias, grad_out)[2]
    reached = int(lengths.max()) * h.shape[2]
    assert torch.equal(grad_weight[:, reached:], torch.zeros_like(grad_weight[:, reached:]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(case=cases(max_batch=6))
def test_a_sample_does_not_depend_on_the_rest_of_the_batch(case, backend, device):
    h, lengths, weight, bias = make_case(**case, device=device)
    together = masked_routing(h, lengths, weight, bias, backend=backend)
    for b in range(h.shape[0]):
        alone = masked_routing(h[b:b + 1], lengths[b:b + 1], weight, bias, backend=backend)
        torch.testing.assert_close(together[b:b + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
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


def test_route_is_the_mask_layer():
    h = torch.arange(12.0).reshape(2, 3, 2)
    routed = route(h, torch.tensor([1, 3]))
    assert torch.equal(routed, torch.tensor([[0.0, 1, 0, 0, 0, 0], [6, 7, 8, 9, 10, 11]]))
    torch.testing.assert_close(masked_routing_fallback(h, torch.tensor([1, 3]), torch.eye(6)), routed)


# ---- invalid inputs: a clear error naming the problem, from the public function and the raw op ----

def good_inputs(device="cpu"):
    return make_case(2, 3, 2, 4, [3, 1], True, dtype=torch.float32, device=device)


INVALID = {
    "length above T": (lambda h, l, w, b: (h, torch.tensor([4, 1]), w, b), ValueError, r"\[0, T\] = \[0, 3\], got 4"),
    "negative length": (lambda h, l, w, b: (h, torch.tensor([-1, 1]), w, b), ValueError, r"got -1"),
    "lengths int32": (lambda h, l, w, b: (h, l.int(), w, b), TypeError, "lengths must be int64"),
    "lengths wrong size": (lambda h, l, w, b: (h, l[:1], w, b), ValueError, r"lengths must be a \(2,\)"),
    "h float16": (lambda h, l, w, b: (h.half(), l, w.half(), b.half()), TypeError, "float32 or float64"),
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


RAW_INVALID = {
    "length above T": (lambda h, l, w, b: (h, torch.tensor([4, 1]), w, b), r"\[0, T\] = \[0, 3\], got 4"),
    "negative length": (lambda h, l, w, b: (h, torch.tensor([-1, 1]), w, b), r"got -1"),
    "lengths int32": (lambda h, l, w, b: (h, l.int(), w, b), "lengths must be int64"),
    "lengths wrong size": (lambda h, l, w, b: (h, l[:1], w, b), r"lengths must be \(B,\) = \(2,\)"),
    "h float16": (lambda h, l, w, b: (h.half(), l, w.half(), b.half()), "float32 or float64"),
    "h 2-D": (lambda h, l, w, b: (h[0], l, w, b), r"h must be \(B, T, D\)"),
    "h not contiguous": (lambda h, l, w, b: (h.transpose(0, 1).contiguous().transpose(0, 1), l, w, b),
                         "h must be contiguous"),
    "weight not contiguous": (lambda h, l, w, b: (h, l, w.t().contiguous().t(), b), "weight must be contiguous"),
    "weight too narrow": (lambda h, l, w, b: (h, l, w[:, :-1].contiguous(), b), r"weight must be \(F, T\*D\)"),
    "weight dtype": (lambda h, l, w, b: (h, l, w.double(), b), "weight has dtype"),
    "bias size": (lambda h, l, w, b: (h, l, w, b[:-1].contiguous()), r"bias must be \(F,\) = \(4,\)"),
}


@pytest.mark.parametrize("name", list(RAW_INVALID))
def test_the_operator_checks_its_inputs_before_touching_memory(name):
    extension.load("cpu", required=True)
    make, message = RAW_INVALID[name]
    with pytest.raises(RuntimeError, match=message):
        torch.ops.mmarnn_min.masked_routing(*make(*good_inputs()))


def test_backward_operator_checks_grad_out():
    extension.load("cpu", required=True)
    h, lengths, weight, _ = good_inputs()
    with pytest.raises(RuntimeError, match=r"grad_out must be \(B, F\) = \(2, 4\)"):
        torch.ops.mmarnn_min.masked_routing_backward(torch.zeros(2, 3), h, lengths, weight)


@CUDA
def test_device_mismatch_is_named():
    h, lengths, weight, bias = good_inputs("cuda")
    with pytest.raises(ValueError, match="weight is on cpu but h is on cuda"):
        masked_routing(h, lengths, weight.cpu(), bias)
    with pytest.raises(RuntimeError, match="lengths is on cpu"):
        torch.ops.mmarnn_min.masked_routing(h, lengths.cpu(), weight, bias)


# ---- backend choice ----

def test_backend_switch_by_argument_and_environment(monkeypatch):
    h, lengths, weight, bias = good_inputs()
    with pytest.raises(ValueError, match="backend must be one of"):
        masked_routing(h, lengths, weight, bias, backend="cublas")
    calls = []
    monkeypatch.setattr(torch.ops.mmarnn_min, "masked_routing", lambda *a: calls.append(a) or a[0][:, 0, :1])
    monkeypatch.setenv("MMARNN_BACKEND", "fallback")
    masked_routing(h, lengths, weight, bias)
    assert calls == []
    monkeypatch.setenv("MMARNN_BACKEND", "extension")
    masked_routing(h, lengths, weight, bias)
    assert len(calls) == 1


@CUDA
def test_lengths_may_live_on_the_cpu_for_cuda_tensors():
    h, lengths, weight, bias = good_inputs("cuda")
    torch.testing.assert_close(masked_routing(h, lengths.cpu(), weight, bias), masked_routing(h, lengths, weight, bias))

"""robustmm's CPU kernels: the small-head attention is PyTorch's attention (values and gradients), in TFR-Net too;
the dropout is F.dropout's function; neither depends on the thread count; PyTorch's operations are used when the
kernels cannot be compiled."""

import dataclasses
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_model import TEXT_DIM, make_batch

from robustmm.models import kernels, tfr_net
from robustmm.models.kernels import KernelDropout, SmallHeadAttention
from robustmm.models.tfr_net import TFRNet
from robustmm.presets import get_preset

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler to build the kernel with")


def qkv(batch, heads, queries, keys, dim, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = ((batch, heads, queries, dim), (batch, heads, keys, dim), (batch, heads, keys, dim))
    return [torch.randn(shape, generator=generator, dtype=dtype).requires_grad_() for shape in shapes]


@needs_compiler
@pytest.mark.parametrize(
    ("shape", "mask"),
    [
        ((3, 2, 7, 9, 5), "per sample"),
        ((2, 3, 33, 17, 1), "per sample and head"),
        ((2, 2, 5, 40, 8), None),
        ((1, 4, 19, 3, 3), "per sample"),
        ((2, 1, 4, 130, 7), "per sample and head"),  # the generic-size path (7 is not specialised)
    ],
)
def test_kernel_is_pytorch_attention_with_its_gradients(shape, mask):
    batch, heads, queries, keys, dim = shape
    q, k, v = qkv(*shape)
    generator = torch.Generator().manual_seed(1)
    allowed = None
    if mask is not None:
        allowed = torch.rand(batch, heads if mask.endswith("head") else 1, 1, keys, generator=generator) > 0.4
        allowed[..., 0] = True  # every query needs a key
    assert kernels.attention_applies(q, allowed)
    grad_out = torch.randn(batch, heads, queries, dim, generator=generator)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad_out)
    out = SmallHeadAttention.apply(q, k, v, allowed)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)
    # Masked keys get no gradient at all.
    if allowed is not None:
        blocked = ~allowed.expand(batch, heads, 1, keys)[:, :, 0, :, None].expand(batch, heads, keys, dim)
        assert not grads[1][blocked].any()


@needs_compiler
def test_kernel_gradients_are_the_derivatives():
    q, k, v = qkv(2, 3, 6, 11, 5, dtype=torch.float64)
    allowed = torch.rand(2, 1, 1, 11, generator=torch.Generator().manual_seed(2)) > 0.5
    allowed[..., 3] = True
    assert torch.autograd.gradcheck(lambda *inputs: SmallHeadAttention.apply(*inputs, allowed), (q, k, v))


@needs_compiler
def test_kernel_results_do_not_depend_on_the_thread_count():
    q, k, v = qkv(4, 3, 50, 61, 5)
    grad_out = torch.randn(4, 3, 50, 5)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            out = SmallHeadAttention.apply(q, k, v, None)
            results.append((out, *torch.autograd.grad(out, (q, k, v), grad_out)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_kernel_leaves_what_it_does_not_compute_to_pytorch():
    q = torch.randn(2, 2, 5, 4)
    for tensor, mask in (
        (torch.randn(2, 2, 5, 16), None),  # a head of 16 dimensions
        (q.to(torch.bfloat16), None),  # autocast
        (q, torch.ones(5, 5, dtype=torch.bool).tril()),  # a causal mask: per query, not per key
    ):
        assert not kernels.attention_applies(tensor, mask)


@needs_compiler
@pytest.mark.parametrize("training", [True, False])
def test_tfr_net_with_the_kernel_is_tfr_net_with_pytorch_attention(training, monkeypatch):
    calls = []

    class Counted(SmallHeadAttention):
        @staticmethod
        def forward(ctx, *inputs):
            calls.append(1)
            return SmallHeadAttention.forward(ctx, *inputs)

    monkeypatch.setattr(tfr_net, "SmallHeadAttention", Counted)
    # In float64, so that float32 rounding, which training amplifies, does not hide a difference of function.
    batch = {
        name: value.double() if value.is_floating_point() else value
        for name, value in make_batch((8, 20, 12), (TEXT_DIM, 5, 20)).items()
    }
    # Only the attention differs: the kernel dropout draws other masks than `kept` (the key dropout uses `kept` in both).
    params = dataclasses.replace(
        get_preset("mosi").tfr_net,
        num_temporal_head=1,
        **dict.fromkeys(("embed_dropout", "relu_dropout", "res_dropout", "text_dropout"), 0.0),
    )

    def step(kernels_setting):
        torch.manual_seed(0)
        model = TFRNet(params, (8, 20, 12), (TEXT_DIM, 5, 20), text_mode="frozen", kernels=kernels_setting).double()
        torch.manual_seed(5)  # the same dropout masks for both
        out = model.train(training)(batch)  # training: key dropout masks; evaluation: padding masks
        (out["prediction"].sum() + out["recon_loss"].sum()).backward()
        return out["recon_loss"].detach(), {name: w.grad.clone() for name, w in model.named_parameters()}

    kernel_loss, kernel_grads = step("auto")
    used = len(calls)
    plain_loss, plain_grads = step("pytorch")
    assert used and len(calls) == used  # "auto" used the kernel, "pytorch" never
    torch.testing.assert_close(kernel_loss, plain_loss)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(kernel_grads[name], grad, atol=1e-10, rtol=1e-9, msg=name)


@needs_compiler
def test_kernel_dropout_is_dropout():
    x = torch.randn(3, 1001, 7, requires_grad=True)  # a size that is not a multiple of four
    torch.manual_seed(3)
    y = KernelDropout.apply(x, 0.3)
    zeroed = y == 0
    assert abs(float(zeroed.float().mean()) - 0.3) < 0.01
    torch.testing.assert_close(y[~zeroed], x[~zeroed] * (1 / 0.7), atol=0, rtol=0)
    grad_out = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, grad_out)
    torch.testing.assert_close(grad, torch.where(zeroed, 0.0, grad_out * (1 / 0.7)), atol=0, rtol=0)
    torch.manual_seed(3)
    assert torch.equal(KernelDropout.apply(x, 0.3), y)  # torch's seed fixes the mask
    assert not torch.equal(KernelDropout.apply(x, 0.3), y)  # and the next draw is another
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        torch.manual_seed(3)
        assert torch.equal(KernelDropout.apply(x, 0.3), y)
    finally:
        torch.set_num_threads(threads)
    assert kernels.dropout_applies(x) and not kernels.dropout_applies(x.to(torch.bfloat16))


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() compiled anew into an empty cache folder, and forgotten after the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernels.library.cache_clear()
    yield tmp_path
    kernels.library.cache_clear()


def test_without_a_compiler_pytorch_attention_is_used_after_a_warning(fresh_library, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-robustmm")
    with pytest.warns(UserWarning, match=r"no C\+\+ compiler .*PyTorch's CPU attention"):
        assert kernels.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert not kernels.attention_applies(torch.randn(2, 2, 5, 4), None)


def test_a_failing_compile_is_reported_and_leaves_no_library(fresh_library, monkeypatch):
    compiler = fresh_library / "broken-cxx"
    compiler.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'kernels.cpp:1: error: nope' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    with pytest.warns(
        UserWarning, match="kernels.cpp with .* failed: .*error: nope: TFR-Net uses PyTorch's CPU attention"
    ):
        assert kernels.library() is None
    assert not list((fresh_library / "robustmm" / "kernels").iterdir())  # no partial file left


@needs_compiler
def test_the_compiled_kernel_is_kept_and_reused(fresh_library):
    assert kernels.library() is not None
    built = list((fresh_library / "robustmm" / "kernels").glob("kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    kernels.library.cache_clear()
    assert kernels.library() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not compiled again


@needs_compiler
def test_a_damaged_library_is_reported_and_removed(fresh_library):
    assert kernels.library() is not None
    (built,) = (fresh_library / "robustmm" / "kernels").glob("kernels-*.so")
    damaged = built.with_name("damaged")
    damaged.write_bytes(b"not a shared library")
    damaged.replace(built)  # a new file: this process keeps its mapping of the loaded one
    # Another process: this one would get its loaded library back from dlopen, whatever the file holds now.
    done = subprocess.run(
        [sys.executable, "-c", "from robustmm.models import kernels; print(kernels.library())"],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(fresh_library)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert "could not be loaded" in done.stderr and "removed: TFR-Net uses PyTorch's CPU attention" in done.stderr
    assert not built.exists()  # so the next run compiles it again

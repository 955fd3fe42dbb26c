"""TFR-Net's CPU kernels, from a small C++ file (kernels.cpp): softmax attention for heads of a few dimensions, and
dropout. The same functions as PyTorch's, faster on TFR-Net's shapes.

Attention: TFR-Net's transformers have heads of 5 dimensions (30 / 6) at up to 500 x 500 steps. PyTorch's CPU flash
attention spends most of its time there outside the exponentials; the kernel takes a third of its time, forward
and backward (MOSI shapes, 2 threads: 52 against 160 ms at 500 x 500).

Dropout: drawing the mask, comparing and selecting are three passes over memory in PyTorch (`kept`, then a
`where`); the kernel makes one.

The library is compiled on first use, once per machine and source, with the C++ compiler (`$CXX`, default g++)
into the user's cache (`~/.cache/robustmm/kernels`); `-march=native` makes it this CPU's. Without a compiler, or
when compiling fails, `library()` is None (after one warning) and TFR-Net uses PyTorch's operations.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

from robustmm.cache_folder import user_cache_folder

MAX_HEAD_DIM = 8  # the attention kernel is specialised for heads of 1-6 and 8 dims; at 15-20, SDPA is faster
SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-std=c++17", "-fPIC", "-shared")

_POINTER, _SIZE = ctypes.c_void_p, ctypes.c_int64
_FORWARD_ARGS = [_POINTER] * 6 + [_SIZE] * 4 + [ctypes.c_int]
_BACKWARD_ARGS = [_POINTER] * 10 + [_SIZE] * 4 + [ctypes.c_int]
_DROPOUT_FORWARD_ARGS = [_POINTER] * 3 + [_SIZE, ctypes.c_uint64, ctypes.c_int32, ctypes.c_float, ctypes.c_int]
_DROPOUT_BACKWARD_ARGS = [_POINTER] * 3 + [_SIZE, ctypes.c_float, ctypes.c_int]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _cpu_description() -> str:
    """What -march=native compiles for: a home folder shared by machines with other CPUs gets other files."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def _compile(compiler: str, target: Path) -> str | None:
    """Compile the kernel into `target`; the compiler's complaint when it fails."""
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(partial)], capture_output=True, text=True)
    except OSError as error:
        return str(error)
    if done.returncode:
        partial.unlink(missing_ok=True)
        return done.stderr.strip()[-2000:] or f"exit code {done.returncode}"
    os.replace(partial, target)  # atomic: runs compiling at once each put a whole file in place
    return None


def _fallback(reason: str) -> None:
    warnings.warn(
        f"{reason}: TFR-Net uses PyTorch's CPU attention and dropout, which are slower on its shapes (the function "
        'is the same; docs/training.md, "robustmm\'s CPU kernels")',
        stacklevel=3,
    )


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, compiling them when this machine has none; None (warned once) when they cannot be
    built or loaded."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return _fallback("no C++ compiler (g++ or $CXX) to build robustmm's kernels with")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    except OSError as error:
        return _fallback(f"{compiler} cannot be run ({error})")
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, _cpu_description()]).encode()).hexdigest()
    target = user_cache_folder("kernels") / f"kernels-{key[:16]}.so"
    if not target.is_file() and (problem := _compile(compiler, target)):
        return _fallback(f"compiling {SOURCE.name} with {compiler} failed: {problem}")
    try:
        kernel = ctypes.CDLL(str(target))
    except OSError as error:
        target.unlink(missing_ok=True)  # damaged: the next run compiles it again
        return _fallback(f"{target} could not be loaded ({error}); removed")
    for suffix in _SUFFIX.values():
        getattr(kernel, f"attention_forward_{suffix}").argtypes = _FORWARD_ARGS
        getattr(kernel, f"attention_backward_{suffix}").argtypes = _BACKWARD_ARGS
    kernel.dropout_forward_f32.argtypes = _DROPOUT_FORWARD_ARGS
    kernel.dropout_backward_f32.argtypes = _DROPOUT_BACKWARD_ARGS
    return kernel


def attention_applies(q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether the kernel computes this attention: CPU, float32 or float64, a head of at most MAX_HEAD_DIM, and no
    mask or a per-key one (broadcast over the queries: (B or 1, H or 1, 1, Lk))."""
    return (
        q.device.type == "cpu"
        and q.dtype in _SUFFIX
        and q.shape[-1] <= MAX_HEAD_DIM
        and (mask is None or mask.dim() == 4 and mask.shape[2] == 1)
        and library() is not None
    )


class SmallHeadAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(E) where `allowed`) v for q (B, H, Lq, E), k and v (B, H, Lk, E) and `allowed` a
    boolean per-key mask (B or 1, H or 1, 1, Lk) or None; every query needs an allowed key. Keeps each row's
    log-sum-exp for backward, which recomputes the weights (as flash attention does)."""

    @staticmethod
    def forward(ctx, q, k, v, allowed):
        batch, heads, queries, dim = q.shape
        keys = k.shape[2]
        q = q.contiguous()
        k_t, v_t = k.transpose(-1, -2).contiguous(), v.transpose(-1, -2).contiguous()  # keys innermost: vectorised
        if allowed is None:
            weights = q.new_ones(batch, heads, keys)
        else:
            weights = allowed.to(q.dtype).expand(batch, heads, 1, keys).reshape(batch, heads, keys).contiguous()
        out, log_sums = torch.empty_like(q), q.new_empty(batch, heads, queries)
        getattr(library(), f"attention_forward_{_SUFFIX[q.dtype]}")(
            q.data_ptr(), k_t.data_ptr(), v_t.data_ptr(), weights.data_ptr(), out.data_ptr(), log_sums.data_ptr(),
            batch * heads, queries, keys, dim, torch.get_num_threads(),
        )  # fmt: skip
        ctx.save_for_backward(q, k_t, v_t, weights, out, log_sums)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k_t, v_t, weights, out, log_sums = ctx.saved_tensors
        batch, heads, queries, dim = q.shape
        grad_out = grad_out.contiguous()
        grad_q, grad_k_t, grad_v_t = torch.empty_like(q), torch.empty_like(k_t), torch.empty_like(v_t)
        getattr(library(), f"attention_backward_{_SUFFIX[q.dtype]}")(
            q.data_ptr(), k_t.data_ptr(), v_t.data_ptr(), weights.data_ptr(), out.data_ptr(), log_sums.data_ptr(),
            grad_out.data_ptr(), grad_q.data_ptr(), grad_k_t.data_ptr(), grad_v_t.data_ptr(),
            batch * heads, queries, k_t.shape[-1], dim, torch.get_num_threads(),
        )  # fmt: skip
        return grad_q, grad_k_t.transpose(-1, -2), grad_v_t.transpose(-1, -2), None


def dropout_applies(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and library() is not None


class KernelDropout(torch.autograd.Function):
    """F.dropout's function on a float32 CPU tensor, in one pass: each element zeroed with probability `rate` (to
    2^-16, as `kept`), the rest scaled by 1 / (1 - rate); backward keeps the boolean mask.

    The mask's bits come from a counter-based generator (splitmix64 of each element's index) seeded by one draw
    from torch's generator: torch.manual_seed fixes them, the thread count does not change them, and activation
    checkpointing, which restores torch's random state, recomputes the same mask."""

    @staticmethod
    def forward(ctx, x, rate):
        x = x.contiguous()
        out, kept = torch.empty_like(x), torch.empty(x.shape, dtype=torch.bool)
        seed = int(torch.empty((), dtype=torch.int64).random_())
        ctx.scale = 1 / (1 - rate)
        library().dropout_forward_f32(
            x.data_ptr(), out.data_ptr(), kept.data_ptr(), x.numel(), seed, round(rate * 65536), ctx.scale,
            torch.get_num_threads(),
        )  # fmt: skip
        ctx.save_for_backward(kept)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (kept,) = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad = torch.empty_like(grad_out)
        library().dropout_backward_f32(
            grad_out.data_ptr(), kept.data_ptr(), grad.data_ptr(), grad.numel(), ctx.scale, torch.get_num_threads()
        )
        return grad, None

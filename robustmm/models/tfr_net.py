"""TFR-Net: Transformer-based Feature Reconstruction Network (Yuan et al., ACM MM 2021), SPEC section 6.

Per modality m in (text, audio, vision): Conv1d projection to d, sinusoidal positions, one intra-modal and two
cross-modal transformers, concatenated to 3d per step. The reconstruction module attends along the 3d feature
channels of each sample (tokens = channels, embedding = time) and maps every step back to D_m with a Linear;
its loss covers exactly the dropped valid positions. The fusion encoders (3-layer BiGRU over the valid length,
Conv1d gate, max pool) feed the classifier.

`faithful=True` is the function of MMSA 2.2.1's TFR_NET (tests/test_mmsa_equivalence.py proves it with MMSA's
own modules; `from_mmsa_state_dict` maps its weights): time-causal masks in every transformer and no key padding
mask, fairseq's positions (a step whose projected channel 0 is exactly 0 gets the zero embedding) and
initialisation, keys and values embedded with their own dropout masks, attention dropout on single weights, the
reconstruction transformer attending across the samples of the batch with a causal mask and `num_temporal_head`
heads, max pooling over padding, the CMD term over all rows, and (finetune) the complete-text target from a
second BERT pass with gradients. Where upstream crashes (heads that do not divide a length, an empty
modality), faithful mode raises a ValueError that says so.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from robustmm.models import kernels
from robustmm.models.kernels import KernelDropout, SmallHeadAttention
from robustmm.models.simam import SimAM
from robustmm.presets import MODALITIES, TFRNetParams
from robustmm.run_options import CHECKPOINTING_LEVELS, KERNELS, TEXT_MODES


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) fairseq/MulT sinusoids (sin half, cos half, positions from 1)."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=device) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(1, length + 1, device=device)[:, None] * frequencies[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, dim - 2 * half))


def causal_mask(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """MulT's future mask as a boolean 'may attend' matrix; offset so that every query sees some keys."""
    blocked = torch.ones(query_len, key_len, dtype=torch.bool, device=device).triu(1 + abs(key_len - query_len))
    return ~blocked


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, L) 'may attend' mask from a (B, L) validity mask; an empty row may attend its first (zeroed) step."""
    allowed = valid.bool().clone()
    allowed[:, 0] |= ~allowed.any(dim=1)
    return allowed[:, None, None, :]


def kept(shape: tuple[int, ...], rate: float, device: torch.device) -> torch.Tensor:
    """A boolean mask, True with probability 1 - rate (to 2^-16: 16 random bits an element).

    CPU dropout's cost is its random numbers (mt19937, one call per 32 bits): torch.rand spends 32 bits and a float
    conversion on each element, bernoulli_ three times that; 16-bit draws from a 64-bit view take 0.6 of rand's time
    (and faithful mode's attention dropout draws 370 M elements a MOSI-shaped step)."""
    if torch.device(device).type == "cuda":
        return torch.rand(shape, device=device) >= rate
    count = math.prod(shape)
    bits = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)[:count]
    return (bits >= round(rate * 65536) - 32768).view(shape)


def dropout(x: torch.Tensor, rate: float, training: bool, compiled: bool = True) -> torch.Tensor:
    """F.dropout's function (zero each element with probability `rate`, scale the rest by 1 / (1 - rate)).

    On CPU robustmm.models.kernels' dropout where it applies and `compiled` (draw, mask and scale in one pass:
    a quarter of the time of the three passes below), else a mask from `kept`; CUDA keeps its fused kernel."""
    if not training or rate == 0 or x.is_cuda:
        return F.dropout(x, rate, training)
    if compiled and kernels.dropout_applies(x):
        return KernelDropout.apply(x, rate)
    return torch.where(kept(x.shape, rate, x.device), x * (1 / (1 - rate)), 0.0)  # backward keeps the boolean mask


def largest_divisor_at_most(n: int, limit: int) -> int:
    return next(k for k in range(min(n, max(limit, 1)), 0, -1) if n % k == 0)


def check_upstream_heads(params: TFRNetParams, seq_lens: tuple[int, int, int]) -> None:
    """Faithful mode runs where upstream runs: its reconstruction transformers embed each modality's length with
    `num_temporal_head` heads, and its MultiheadAttention asserts that they divide it."""
    problems = [
        f"{name} length {length}" for name, length in zip(MODALITIES, seq_lens) if length % params.num_temporal_head
    ]
    if problems:
        raise ValueError(
            f"faithful mode: num_temporal_head {params.num_temporal_head} does not divide the {', '.join(problems)}; "
            "upstream TFR-Net crashes here ('embed_dim must be divisible by num_heads' in its reconstruction "
            "transformer). Use the default mode (it takes the largest divisor) or a num_temporal_head that divides "
            "every length"
        )


class WeightDropoutAttention(torch.autograd.Function):
    """Softmax attention whose single weights are dropped where `keep` is False (the rest scaled by 1 / (1 - rate)):
    faithful mode's attention dropout, on CPU.

    q (B, H, Lq, E), k and v (B, H, Lk, E), `allowed` a boolean 'may attend' mask broadcastable to (B, H, Lq, Lk)
    or None, `keep` (B, H, Lq, Lk) boolean. SDPA's unfused path keeps the weights, their dropout mask and the
    dropped weights for backward: 9 bytes an element, 3 GB at MOSI shapes. This keeps `keep` (1 byte) and each
    row's log-sum-exp, and recomputes the weights in backward a few samples at a time (a slice that stays in cache).
    """

    SLICE_ELEMENTS = 1 << 21

    @staticmethod
    def forward(ctx, q, k, v, allowed, keep, rate):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # sliced in forward and again in backward
        bias = None if allowed is None else torch.zeros(allowed.shape, dtype=q.dtype).masked_fill_(~allowed, -math.inf)
        out, log_sums = torch.empty_like(q), q.new_empty(q.shape[:-1] + (1,))
        for rows in WeightDropoutAttention.slices(q, k):
            weights = WeightDropoutAttention.scores(q, k, bias, rows)
            log_sums[rows] = torch.logsumexp(weights, dim=-1, keepdim=True)
            weights.sub_(log_sums[rows]).exp_().mul_(keep[rows]).mul_(1 / (1 - rate))
            torch.matmul(weights, v[rows], out=out[rows])
        ctx.save_for_backward(q, k, v, bias, keep, log_sums)
        ctx.rate = rate
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, keep, log_sums = ctx.saved_tensors
        scale, kept_scale = q.shape[-1] ** -0.5, 1 / (1 - ctx.rate)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for rows in WeightDropoutAttention.slices(q, k):
            weights = WeightDropoutAttention.scores(q, k, bias, rows).sub_(log_sums[rows]).exp_()
            dropped = weights * keep[rows] * kept_scale
            torch.matmul(dropped.transpose(-1, -2), grad_out[rows], out=grad_v[rows])
            grad_weights = torch.matmul(grad_out[rows], v[rows].transpose(-1, -2)).mul_(keep[rows]).mul_(kept_scale)
            # Softmax backward: d scores = w * (d w - sum(d w * w) over the row).
            row_sums = (grad_weights * weights).sum(dim=-1, keepdim=True)
            grad_scores = grad_weights.sub_(row_sums).mul_(weights).mul_(scale)
            torch.matmul(grad_scores, k[rows], out=grad_q[rows])
            torch.matmul(grad_scores.transpose(-1, -2), q[rows], out=grad_k[rows])
        return grad_q, grad_k, grad_v, None, None, None

    @staticmethod
    def slices(q: torch.Tensor, k: torch.Tensor):
        batch, heads, query_len, _ = q.shape
        step = max(1, WeightDropoutAttention.SLICE_ELEMENTS // (heads * query_len * k.shape[2]))
        return (slice(start, start + step) for start in range(0, batch, step))

    @staticmethod
    def scores(q, k, bias, rows: slice) -> torch.Tensor:
        scores = torch.matmul(q[rows], k[rows].transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
        if bias is not None:
            scores.add_(bias if bias.dim() < 4 or bias.shape[0] == 1 else bias[rows])
        return scores


class TransformerLayer(nn.Module):
    """Pre-norm attention + feed-forward block of MulT, with fused scaled-dot-product attention.

    `faithful`: attention dropout by single weights (else by keys) and fairseq's initialisation. `kernels`
    (KERNELS) chooses the attention and dropout kernels: the same function either way."""

    def __init__(
        self,
        dim: int,
        heads: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        faithful: bool,
        kernels: str = "auto",
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} attention heads do not divide the embedding size {dim}")
        self.heads, self.attn_dropout, self.relu_dropout, self.res_dropout = (
            heads,
            attn_dropout,
            relu_dropout,
            res_dropout,
        )
        self.drop_keys = not faithful
        self.compiled_kernels = kernels == "auto"
        self.norm_attn = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        if faithful:
            self.fairseq_init()

    @torch.no_grad()
    def fairseq_init(self) -> None:
        """Xavier-uniform weights and zero biases; the query/key/value projection is one (3 dim, dim) matrix there."""
        dim = self.query.in_features
        in_proj = nn.init.xavier_uniform_(torch.empty(3 * dim, dim))
        self.query.weight.copy_(in_proj[:dim])
        self.key_value.weight.copy_(in_proj[dim:])
        for linear in (self.out, self.fc1, self.fc2):
            nn.init.xavier_uniform_(linear.weight)
        for linear in (self.query, self.key_value, self.out, self.fc1, self.fc2):
            nn.init.zeros_(linear.bias)

    def attention(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, query_len, dim = x.shape
        split = lambda t: t.view(batch, t.shape[1], self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        if values is keys:
            key, value = self.key_value(keys).chunk(2, dim=-1)
        else:
            key_weight, value_weight = self.key_value.weight.chunk(2, dim=0)
            key_bias, value_bias = self.key_value.bias.chunk(2, dim=0)
            key, value = F.linear(keys, key_weight, key_bias), F.linear(values, value_weight, value_bias)
        dropout = self.attn_dropout if self.training else 0.0
        if dropout and self.drop_keys:
            mask, dropout = self.dropped_keys(mask, batch, keys.shape[1], x.device, dropout), 0.0
        query, key, value = split(self.query(x)), split(key), split(value)
        if dropout and not x.is_cuda:
            keep = kept((batch, self.heads, query_len, keys.shape[1]), dropout, x.device)
            attended = WeightDropoutAttention.apply(query, key, value, mask, keep, dropout)
        elif not dropout and self.compiled_kernels and kernels.attention_applies(query, mask):
            attended = SmallHeadAttention.apply(query, key, value, mask)
        else:
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
        return self.out(attended.transpose(1, 2).reshape(batch, query_len, dim))

    def dropped_keys(self, mask, batch: int, key_len: int, device, rate: float) -> torch.Tensor:
        """Attention dropout by keys: each (sample, head) ignores a random `rate` of the keys, for all queries.

        Dropping single weights of the (queries x keys) map forces the unfused attention path that stores
        the map and its dropout mask for backward (GBs at 500 x 500); a per-key mask keeps the fused kernels.
        A row whose allowed keys would all be dropped keeps them."""
        keys_kept = kept((batch, self.heads, 1, key_len), rate, device)
        allowed = keys_kept if mask is None else keys_kept & mask
        return torch.where(allowed.any(dim=-1, keepdim=True), allowed, True if mask is None else mask)

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor | None, values: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Self-attention when `keys` is None; else cross-attention to `keys` and `values` (the same tensor
        unless they were embedded with their own dropout masks)."""
        normed = self.norm_attn(x)
        if keys is None:
            keys = values = normed
        else:
            keys, values = (
                (self.norm_attn(keys),) * 2 if values is keys else (self.norm_attn(keys), self.norm_attn(values))
            )
        compiled = self.compiled_kernels
        x = x + dropout(self.attention(normed, keys, values, mask), self.res_dropout, self.training, compiled)
        hidden = dropout(F.relu(self.fc1(self.norm_ff(x))), self.relu_dropout, self.training, compiled)
        return x + dropout(self.fc2(hidden), self.res_dropout, self.training, compiled)


class TransformerEncoder(nn.Module):
    """MulT's encoder on (batch, seq, dim): scaled input, optional positions, embedding dropout, final norm.

    With `context` it is a cross-modal transformer (queries from x, keys and values from context).
    `faithful` is fairseq's form as upstream has it: a step whose channel 0 is exactly 0 gets position 0 (a
    zero embedding: its make_positions treats the value 0 as padding), keys and values are embedded with
    their own dropout masks, attention dropout drops single weights, and fairseq's initialisation."""

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        attn_dropout: float,
        params: TFRNetParams,
        positions: bool,
        faithful: bool,
        checkpointing: bool,
        kernels: str = "auto",
    ):
        super().__init__()
        self.scale, self.positions, self.embed_dropout = math.sqrt(dim), positions, params.embed_dropout
        self.faithful, self.checkpointing, self.compiled_kernels = faithful, checkpointing, kernels == "auto"
        self.layers = nn.ModuleList(
            TransformerLayer(dim, heads, attn_dropout, params.relu_dropout, params.res_dropout, faithful, kernels)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        scaled = self.scale * x
        if self.positions:
            table = sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
            scaled = scaled + (table * (x[:, :, :1] != 0) if self.faithful else table)
        return dropout(scaled, self.embed_dropout, self.training, self.compiled_kernels)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.embed(x)
        keys = values = None if context is None else self.embed(context)
        if context is not None and self.faithful and self.training and self.embed_dropout:
            values = self.embed(context)
        for layer in self.layers:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                # Recomputed in backward, the random state restored (the same dropout): the transformers' saved
                # activations at MOSI shapes (batch 24) are 1.2 GB, 0.6 of them the reconstruction's (its
                # feed-forward layers are 4 L = 2000 wide). Layer by layer: only one layer's activations are alive
                # at a time in backward.
                x = checkpoint(layer, x, keys, values, mask, use_reentrant=False)
            else:
                x = layer(x, keys, values, mask)
        return self.norm(x)


class PairedGRU(torch.autograd.Function):
    """Two independent one-layer GRUs (PyTorch's gate equations), stacked on dim 0, stepped together.

    x (2, B, T, I) with weights (2, 3H, I), (2, 3H, H) and biases (2, 3H) gives the outputs (2, B, T, H).
    nn.GRU on CPU runs each direction and layer alone, and its autograd backward replays ~10 small ops per step
    (1.2 s of a 6.5 s MOSI-shaped step). Here both directions share each step's one matmul (a block-diagonal
    recurrent weight: a single small GEMM, which BLAS keeps on one thread, where a batched one would wait for
    a second thread every step), the input projection and the weight gradients are one matmul over all steps,
    and the backward loop keeps only what depends on the carried gradient (4 ops a step)."""

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh):
        outputs, saved = PairedGRU.run(x, weight_ih, weight_hh, bias_ih, bias_hh, keep=True)
        ctx.save_for_backward(x, weight_ih, weight_hh, *saved)
        return outputs

    @staticmethod
    def run(x, weight_ih, weight_hh, bias_ih, bias_hh, keep: bool):
        """The outputs (2, B, T, H) and, with `keep`, what the backward needs."""
        pairs, batch, length, _ = x.shape
        hidden = weight_hh.shape[2]
        # Every step's gate inputs in one matmul, laid out (T, B, 2, 3H) so that a step is one contiguous block.
        gates_in = torch.baddbmm(bias_ih[:, None, :], x.reshape(pairs, batch * length, -1), weight_ih.transpose(1, 2))
        gates_in = gates_in.view(pairs, batch, length, 3 * hidden).permute(2, 1, 0, 3).contiguous()
        recurrent = torch.block_diag(*weight_hh.transpose(1, 2))  # (2H, 6H): [h_0 | h_1] -> [gates_0 | gates_1]
        recurrent_bias = bias_hh.reshape(-1)
        outputs = x.new_empty(length, batch, pairs, hidden)
        if keep:
            reset_update = x.new_empty(length, batch, pairs, 2 * hidden)
            new_gate = x.new_empty(length, batch, pairs, hidden)
            recurrent_new = x.new_empty(length, batch, pairs, hidden)
        h = x.new_zeros(batch, pairs, hidden)
        for t in range(length):
            gates_h = torch.addmm(recurrent_bias, h.view(batch, -1), recurrent).view(batch, pairs, 3 * hidden)
            rz = torch.sigmoid(gates_in[t, :, :, : 2 * hidden] + gates_h[:, :, : 2 * hidden])
            n = torch.tanh(
                torch.addcmul(gates_in[t, :, :, 2 * hidden :], rz[:, :, :hidden], gates_h[:, :, 2 * hidden :])
            )
            h = torch.lerp(n, h, rz[:, :, hidden:], out=outputs[t])  # (1 - z) n + z h
            if keep:
                reset_update[t], new_gate[t], recurrent_new[t] = rz, n, gates_h[:, :, 2 * hidden :]
        saved = (outputs, reset_update, new_gate, recurrent_new, recurrent) if keep else ()
        return outputs.permute(2, 1, 0, 3).contiguous(), saved

    @staticmethod
    def backward(ctx, grad_outputs):
        x, weight_ih, weight_hh, outputs, reset_update, new_gate, recurrent_new, recurrent = ctx.saved_tensors
        length, batch, pairs, hidden = outputs.shape
        r, z, n = reset_update[..., :hidden], reset_update[..., hidden:], new_gate
        previous = torch.cat([outputs.new_zeros(1, batch, pairs, hidden), outputs[:-1]])
        # d(pre-activation) = dh * factor, for each gate; the factors do not depend on the carried gradient.
        new_factor = (1 - z) * (1 - n * n)
        update_factor = (previous - n) * z * (1 - z)
        reset_factor = new_factor * recurrent_new * r * (1 - r)
        recurrent_factors = torch.stack([reset_factor, update_factor, new_factor * r], dim=3)  # (T, B, 2, 3, H)
        incoming = grad_outputs.permute(2, 1, 0, 3)
        carried_grads = torch.empty_like(outputs)  # dL/dh_t: all that reaches step t's output
        carried = outputs.new_zeros(batch, pairs, hidden)
        for t in range(length - 1, -1, -1):
            dh = torch.add(carried, incoming[t], out=carried_grads[t])
            grad_gates_h = (recurrent_factors[t] * dh[:, :, None, :]).view(batch, -1)
            carried = torch.addmm((dh * z[t]).view(batch, -1), grad_gates_h, recurrent.T).view(batch, pairs, hidden)
        grad_gates_h = (recurrent_factors * carried_grads[:, :, :, None, :]).flatten(3)  # (T, B, 2, 3H)
        grad_gates_in = torch.cat([grad_gates_h[..., : 2 * hidden], carried_grads * new_factor], dim=-1)
        # Per direction, rows in x's (B, T) order.
        grad_gates_in = grad_gates_in.permute(2, 1, 0, 3).reshape(pairs, batch * length, 3 * hidden)
        grad_x = torch.bmm(grad_gates_in, weight_ih).view_as(x)
        grad_weight_ih = torch.bmm(grad_gates_in.transpose(1, 2), x.reshape(pairs, batch * length, -1))
        grad_weight_hh = torch.bmm(
            grad_gates_h.permute(2, 3, 0, 1).reshape(pairs, 3 * hidden, -1),
            previous.permute(2, 0, 1, 3).reshape(pairs, -1, hidden),
        )
        return grad_x, grad_weight_ih, grad_weight_hh, grad_gates_in.sum(dim=1), grad_gates_h.sum(dim=(0, 1))


class BiGRU(nn.Module):
    """Multi-layer bidirectional GRU over the valid length of each row, zeros after it.

    Gives the outputs of nn.GRU on a packed sequence (pack_padded_sequence), computed as two unidirectional
    GRUs per layer on padded tensors, the backward one on each row reversed within its length, stepped
    together (PairedGRU). On CPU the packed path slices one step at a time and its backward allocates a
    full-size gradient per step, which grows with the square of the length (minutes per batch at 500 frames).
    The weights stay in one nn.GRU per direction and layer (upstream's names map onto them)."""

    def __init__(self, in_dim: int, hidden: int, layers: int):
        super().__init__()
        sizes = [in_dim] + [2 * hidden] * (layers - 1)
        self.ahead = nn.ModuleList(nn.GRU(size, hidden, batch_first=True) for size in sizes)
        self.behind = nn.ModuleList(nn.GRU(size, hidden, batch_first=True) for size in sizes)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Recurrences run in their weights' dtype (float32 under mixed precision): cheap at these sizes, and cuDNN's RNNs lack bf16.
        x = x.to(self.ahead[0].weight_ih_l0.dtype)
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        valid = (steps < lengths[:, None])[:, :, None]
        # Reversing within the length is its own inverse; padding steps stay in place.
        reverse = torch.where(valid[:, :, 0], lengths[:, None] - 1 - steps, steps)[:, :, None]
        flip = lambda t: t.gather(1, reverse.expand(-1, -1, t.shape[2]))  # noqa: E731
        for ahead, behind in zip(self.ahead, self.behind):
            if x.is_cuda:  # cuDNN's fused GRU is faster there than stepping in Python
                both = (ahead(x)[0], behind(flip(x))[0])
            else:
                weights = (
                    torch.stack([getattr(ahead, name), getattr(behind, name)])
                    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
                )
                pair = torch.stack([x, flip(x)])
                if torch.is_grad_enabled():
                    both = PairedGRU.apply(pair, *weights)
                else:
                    both = PairedGRU.run(pair, *weights, keep=False)[0]
            x = torch.cat([both[0], flip(both[1])], dim=-1) * valid
        return x


class GatedEncoder(nn.Module):
    """The CNN-gate fusion encoder: BiGRU over the valid length, Conv1d gate, tanh projection, max pool."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float, masked_pool: bool):
        super().__init__()
        self.gru = BiGRU(in_dim, hidden, layers)
        self.gate = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.project = nn.Linear(2 * hidden + in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.masked_pool = masked_pool

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        context = self.gru(x, lengths)
        gate = torch.sigmoid(self.gate(context.transpose(1, 2))).transpose(1, 2)
        steps = torch.tanh(self.project(torch.cat([x, torch.tanh(context) * gate], dim=-1)))
        if self.masked_pool:
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
            pooled = steps.masked_fill(~valid[:, :, None], float("-inf")).max(dim=1).values
            pooled = torch.where(valid.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))
        else:
            pooled = steps.max(dim=1).values
        return self.dropout(pooled)


class TFRNet(nn.Module):
    """TFR-Net on one batch dict (see `forward`); returns the prediction and the three reconstruction losses.

    seq_lens and feature_dims are (text, audio, vision); feature_dims[0] is the text encoder's hidden size.
    In `finetune` mode `text_encoder` (a Hugging Face BERT-family model) is part of the model and reads the
    corrupted ids; in `frozen` mode the batch carries precomputed encoder outputs and no encoder is held.
    `checkpointing` recomputes activations in backward: True in every layer of the text encoder and the
    transformers, "text-encoder" in the text encoder's only, False nowhere. `kernels` "auto" computes the
    attention of heads of up to 8 dimensions and the dropout on CPU with robustmm.models.kernels, "pytorch"
    always with PyTorch's operations (the same function).
    """

    def __init__(
        self,
        params: TFRNetParams,
        seq_lens: tuple[int, int, int],
        feature_dims: tuple[int, int, int],
        text_mode: str = "finetune",
        text_encoder: nn.Module | None = None,
        simam: bool = False,
        faithful: bool = False,
        checkpointing: bool | str = True,
        kernels: str = "auto",
    ):
        super().__init__()
        if text_mode not in TEXT_MODES:
            raise ValueError(f"unknown text mode {text_mode!r}: choose one of {', '.join(TEXT_MODES)}")
        if (text_mode == "finetune") != (text_encoder is not None):
            raise ValueError("finetune mode needs a text encoder inside the model; frozen mode takes none")
        self.params, self.seq_lens, self.feature_dims = params, tuple(seq_lens), tuple(feature_dims)
        self.text_mode, self.faithful, self.checkpointing = text_mode, faithful, checkpointing
        self.compiled_kernels = kernels == "auto"
        self.text_encoder = text_encoder
        if checkpointing not in CHECKPOINTING_LEVELS:
            raise ValueError(f"checkpointing {checkpointing!r}: expected True, False or 'text-encoder'")
        if kernels not in KERNELS:
            raise ValueError(f"kernels {kernels!r}: expected {' or '.join(KERNELS)}")
        if checkpointing and getattr(text_encoder, "supports_gradient_checkpointing", False):
            # BERT's layers hold half of a training step's saved activations at MOSI shapes (1.25 of 2.7 GB, batch
            # 24); recomputing each layer in backward costs one more BERT forward, a small part of a step.
            text_encoder.config.use_cache = False  # a decoder's key/value cache; BERT as an encoder has none to keep
            text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        d, p = params.common_dim, params
        if faithful:
            check_upstream_heads(p, self.seq_lens)
        # Upstream skips the projection of a modality whose features already have d dims.
        self.projections = nn.ModuleList(
            nn.Identity()
            if faithful and dim == d
            else nn.Conv1d(dim, d, kernel_size=k, padding=(k - 1) // 2, bias=False)
            for dim, k in zip(feature_dims, p.conv_kernels)
        )
        # attn_dropout is (text, audio, vision): a cross-modal transformer uses the dropout of its key modality,
        # the intra-modal ones the text value, as upstream.
        intra_layers = max(p.nlevels, p.intra_layers)
        encoder_options = {"faithful": faithful, "checkpointing": checkpointing is True, "kernels": kernels}
        self.intra = nn.ModuleList(
            TransformerEncoder(d, p.num_heads, intra_layers, p.attn_dropout[0], p, positions=True, **encoder_options)
            for _ in MODALITIES
        )
        self.cross = nn.ModuleDict(
            {
                f"{query}_{key}": TransformerEncoder(
                    d, p.num_heads, p.nlevels, p.attn_dropout[k], p, positions=True, **encoder_options
                )
                for q, query in enumerate(MODALITIES)
                for k, key in enumerate(MODALITIES)
                if k != q
            }
        )
        self.reconstructors = nn.ModuleList(
            TransformerEncoder(
                length,
                p.num_temporal_head if faithful else largest_divisor_at_most(length, p.num_temporal_head),
                intra_layers,
                p.attn_dropout[0],
                p,
                positions=False,
                **encoder_options,
            )
            for length in self.seq_lens
        )
        self.back_projections = nn.ModuleList(nn.Linear(3 * d, dim) for dim in feature_dims)
        self.fusion = nn.ModuleList(
            GatedEncoder(3 * d, hidden, p.fusion_gru_layers, p.fusion_dropout, masked_pool=not faithful)
            for hidden in p.fusion_hidden
        )
        self.simam = SimAM() if simam else None
        fused = sum(p.fusion_hidden)
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(fused),
            nn.Linear(fused, p.cls_hidden_dim),
            nn.LeakyReLU(),
            nn.Dropout(p.cls_dropout),
            nn.Linear(p.cls_hidden_dim, 1),
        )

    def encode_text(self, text_bert: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(
            input_ids=text_bert[:, 0], attention_mask=text_bert[:, 1], token_type_ids=text_bert[:, 2]
        ).last_hidden_state

    def text_inputs(self, batch: dict, with_target: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(corrupted text features fed to the model, complete text features used as reconstruction target)."""
        if self.text_mode == "frozen":
            return batch["text_m"], batch["text"]
        corrupted = self.encode_text(batch["text_bert_m"])
        if not with_target:
            return corrupted, None
        if self.faithful:
            return corrupted, self.encode_text(batch["text_bert"])
        with torch.no_grad():
            return corrupted, self.encode_text(batch["text_bert"])

    def reconstruct(self, index: int, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """features (B, L, 3d) -> (B, L, D_m). Tokens are the 3d channels, embedding the L steps."""
        if self.faithful:
            # Upstream feeds (channels, batch, time) to a sequence-first encoder: it attends across samples.
            across_batch = features.permute(2, 0, 1)
            mask = causal_mask(across_batch.shape[1], across_batch.shape[1], features.device)
            channels = self.reconstructors[index](across_batch, mask=mask).permute(1, 0, 2)
        else:
            # Zeroed padding steps make the result independent of padded values.
            channels = self.reconstructors[index]((features * valid[:, :, None]).transpose(1, 2))
        return self.back_projections[index](channels.transpose(1, 2))

    def contextualise(self, q: int, projected: list[torch.Tensor], valid: list[torch.Tensor]) -> torch.Tensor:
        """Modality q's intra-modal and two cross-modal transformer outputs, concatenated: (B, L_q, 3d)."""
        parts = [self.intra[q](projected[q], mask=self.attention_mask(q, q, valid))]
        for k, key in enumerate(MODALITIES):
            if k != q:
                mask = self.attention_mask(q, k, valid)
                parts.append(self.cross[f"{MODALITIES[q]}_{key}"](projected[q], projected[k], mask=mask))
        return torch.cat(parts, dim=-1)

    def forward(self, batch: dict, with_reconstruction: bool = True) -> dict:
        """batch: text_bert, text_bert_m (B, 3, L_t) ids (finetune) or text, text_m (B, L_t, H) (frozen);
        audio, audio_m, vision, vision_m (B, L, D); audio_lengths, vision_lengths (B,);
        text_keep, audio_keep, vision_keep (B, L) with 1 = valid and kept, read by the reconstruction loss only.
        Returns {"prediction": (B,), "recon_loss": (3,) per modality, unweighted}; without reconstruction
        (predicting only) the complete-text pass and the reconstruction are skipped and recon_loss is None."""
        lengths = [batch["text_bert"][:, 1].sum(dim=1), batch["audio_lengths"], batch["vision_lengths"]]
        if self.faithful:
            check_upstream_lengths(lengths)
        text_m, text_target = self.text_inputs(batch, with_target=with_reconstruction)
        text_m = dropout(text_m, self.params.text_dropout, self.training, self.compiled_kernels)
        inputs = [text_m, batch["audio_m"], batch["vision_m"]]
        targets = [text_target, batch["audio"], batch["vision"]]
        steps = [torch.arange(x.shape[1], device=x.device)[None, :] for x in inputs]
        valid = [(step < length[:, None]).to(x.dtype) for step, length, x in zip(steps, lengths, inputs)]

        projected = []
        for index, x in enumerate(inputs):
            if not self.faithful:
                x = x * valid[index][:, :, None]
            h = self.projections[index](x.transpose(1, 2)).transpose(1, 2)
            projected.append(self.simam(h, valid[index]) if self.simam is not None else h)

        hidden = [self.contextualise(q, projected, valid) for q in range(len(MODALITIES))]
        # The keep masks are the simulator's: only the loss reads them, never the prediction's path.
        recon_loss = (
            torch.stack(
                [
                    self.reconstruction_loss(
                        self.reconstruct(m, hidden[m], valid[m]),
                        targets[m],
                        valid[m] - batch[f"{MODALITIES[m]}_keep"].to(valid[m].dtype),
                    )
                    for m in range(len(MODALITIES))
                ]
            )
            if with_reconstruction
            else None
        )
        pooled = []
        for m in range(len(MODALITIES)):
            h = self.simam(hidden[m], valid[m]) if self.simam is not None else hidden[m]
            pooled.append(self.fusion[m](h, lengths[m]))
        prediction = self.classifier(torch.cat(pooled, dim=1)).squeeze(-1)
        return {"prediction": prediction, "recon_loss": recon_loss}

    def attention_mask(self, q: int, k: int, valid: list[torch.Tensor]) -> torch.Tensor:
        if self.faithful:
            return causal_mask(valid[q].shape[1], valid[k].shape[1], valid[q].device)
        return key_padding_mask(valid[k])

    def reconstruction_loss(
        self, prediction: torch.Tensor, target: torch.Tensor, missing: torch.Tensor
    ) -> torch.Tensor:
        """SmoothL1 summed over the dropped valid positions / number of their elements (+ weighted CMD)."""
        dtype = torch.promote_types(prediction.dtype, torch.float32)  # float32 at least, also under autocast
        prediction, target = prediction.to(dtype), target.to(dtype)
        weights = missing[:, :, None].to(dtype).expand_as(prediction)
        count = weights.sum() + 1e-4
        loss = F.smooth_l1_loss(prediction * weights, target * weights, reduction="sum") / count
        if self.params.weight_sim_loss:
            if self.faithful:
                rows_pred = (prediction * weights).flatten(0, 1)
                rows_target = (target * weights).flatten(0, 1)
            else:
                chosen = missing.bool()
                rows_pred, rows_target = prediction[chosen], target[chosen]
            if len(rows_pred):
                loss = loss + self.params.weight_sim_loss * central_moment_discrepancy(rows_pred, rows_target) / count
        return loss


def check_upstream_lengths(lengths: list[torch.Tensor]) -> None:
    """Upstream packs every modality for its fusion GRUs, and pack_padded_sequence refuses empty sequences."""
    empty = [name for name, length in zip(MODALITIES, lengths) if bool((length == 0).any())]
    if empty:
        raise ValueError(
            f"faithful mode: the batch has samples with no {' and no '.join(empty)} steps (length 0); upstream "
            "TFR-Net crashes on them (pack_padded_sequence: lengths must be greater than 0). Use the default mode, "
            "which handles empty modalities, or drop those samples"
        )


def central_moment_discrepancy(x1: torch.Tensor, x2: torch.Tensor, moments: int = 3) -> torch.Tensor:
    """CMD (Zellinger et al.) between two sets of rows, as upstream's RECLoss 'combine' uses it."""
    mean1, mean2 = x1.mean(dim=0), x2.mean(dim=0)
    centred1, centred2 = x1 - mean1, x2 - mean2
    distance = lambda a, b: ((a - b).pow(2).sum() + 1e-12).sqrt()  # noqa: E731
    total = distance(mean1, mean2)
    for k in range(2, moments + 1):
        total = total + distance(centred1.pow(k).mean(dim=0), centred2.pow(k).mean(dim=0))
    return total


_MMSA_MODALITY = {"l": 0, "t": 0, "a": 1, "v": 2, "text": 0, "audio": 1, "vision": 2}
_MMSA_CLASSIFIER = {"norm": 0, "hidden": 1, "final": 4}


def from_mmsa_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors keyed by MMSA 2.2.1 TFR_NET names (its state dict, or its gradients by parameter name) under the
    names of robustmm's faithful TFRNet: an MMSA checkpoint loads with `model.load_state_dict(...)`.

    An AMIO checkpoint's leading `Model.` is dropped, and so are upstream's constant buffers (`version`, the
    positions' dtype marker). BERT's tensors go to `text_encoder.` (a frozen-mode model, which holds no
    encoder, loads with them removed)."""
    mapped = {}
    for name, tensor in tensors.items():
        mapped.update(_from_mmsa_key(name.removeprefix("Model."), tensor))
    return mapped


def _from_mmsa_key(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    if name.startswith("text_model.model."):
        return {"text_encoder." + name.removeprefix("text_model.model."): tensor}
    if match := re.fullmatch(r"align_subnet\.Model\.proj_([lav])\.weight", name):
        return {f"projections.{_MMSA_MODALITY[match[1]]}.weight": tensor}
    if match := re.fullmatch(r"align_subnet\.Model\.trans_([lav])_(mem|final|with_([lav]))\.(.+)", name):
        query = _MMSA_MODALITY[match[1]]
        if match[2] == "mem":
            prefix = f"intra.{query}"
        elif match[2] == "final":
            prefix = f"reconstructors.{query}"
        else:
            prefix = f"cross.{MODALITIES[query]}_{MODALITIES[_MMSA_MODALITY[match[3]]]}"
        return {f"{prefix}.{key}": value for key, value in _from_mmsa_encoder_key(match[4], tensor).items()}
    if match := re.fullmatch(r"generator_([tav])\.Model\.linear\.(weight|bias)", name):
        return {f"back_projections.{_MMSA_MODALITY[match[1]]}.{match[2]}": tensor}
    if match := re.fullmatch(
        r"fusion_subnet\.Model\.(text|audio|vision)_encoder\.gru\.gru\.(\w+)_l(\d+)(_reverse)?", name
    ):
        direction = "behind" if match[4] else "ahead"
        return {f"fusion.{_MMSA_MODALITY[match[1]]}.gru.{direction}.{match[3]}.{match[2]}_l0": tensor}
    if match := re.fullmatch(r"fusion_subnet\.Model\.(text|audio|vision)_encoder\.(cnn|fc)\.(weight|bias)", name):
        part = {"cnn": "gate", "fc": "project"}[match[2]]
        return {f"fusion.{_MMSA_MODALITY[match[1]]}.{part}.{match[3]}": tensor}
    if match := re.fullmatch(r"fusion_subnet\.Model\.classifier\.linear_trans_(norm|hidden|final)\.(\w+)", name):
        return {f"classifier.{_MMSA_CLASSIFIER[match[1]]}.{match[2]}": tensor}
    raise KeyError(f"{name!r} is not a parameter or buffer of MMSA 2.2.1's TFR_NET")


def _from_mmsa_encoder_key(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """One key of upstream's TransformerEncoder (fairseq's MultiheadAttention: one (3 dim, dim) in-projection)."""
    if name in ("version", "embed_positions._float_tensor"):
        return {}
    if name.startswith("layer_norm."):
        return {"norm." + name.removeprefix("layer_norm."): tensor}
    layer, rest = re.fullmatch(r"(layers\.\d+)\.(.+)", name).groups()
    if match := re.fullmatch(r"self_attn\.in_proj_(weight|bias)", rest):
        dim = tensor.shape[0] // 3
        return {f"{layer}.query.{match[1]}": tensor[:dim], f"{layer}.key_value.{match[1]}": tensor[dim:]}
    renamed = re.sub(r"^self_attn\.out_proj\.", "out.", rest)
    renamed = re.sub(r"^layer_norms\.0\.", "norm_attn.", renamed)
    renamed = re.sub(r"^layer_norms\.1\.", "norm_ff.", renamed)
    return {f"{layer}.{renamed}": tensor}

"""TFR-Net and SimAM: shapes for every preset, padding masking, the reconstruction loss, the faithful switch."""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from robustmm.models.simam import simam
from robustmm.models.tfr_net import BiGRU, PairedGRU, TFRNet, WeightDropoutAttention, causal_mask, dropout, kept
from robustmm.presets import PRESETS, get_preset

TEXT_DIM = 16


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_batch(seq_lens, feature_dims, batch=2, seed=0):
    """A frozen-mode batch with padding and dropped steps in every modality."""
    generator = torch.Generator().manual_seed(seed)
    len_t, len_a, len_v = seq_lens
    text_len = torch.tensor([len_t, max(3, len_t // 2)])[:batch]
    lengths = {
        "audio": torch.tensor([len_a, max(1, len_a // 3)])[:batch],
        "vision": torch.tensor([max(1, len_v // 2), len_v])[:batch],
    }
    text_bert = torch.zeros(batch, 3, len_t, dtype=torch.long)
    text_bert[:, 1] = (torch.arange(len_t)[None] < text_len[:, None]).long()
    out = {"text_bert": text_bert}
    for name, dim, length in (
        ("text", feature_dims[0], len_t),
        ("audio", feature_dims[1], len_a),
        ("vision", feature_dims[2], len_v),
    ):
        valid = text_bert[:, 1] if name == "text" else (torch.arange(length)[None] < lengths[name][:, None]).long()
        keep = valid * (torch.rand(batch, length, generator=generator) > 0.4).long()
        complete = torch.randn(batch, length, dim, generator=generator) * valid[:, :, None]
        out[name], out[f"{name}_m"], out[f"{name}_keep"] = complete, complete * keep[:, :, None], keep
    out["audio_lengths"], out["vision_lengths"] = lengths["audio"], lengths["vision"]
    return out


def frozen_model(preset_name="mosi", seq_lens=(8, 20, 12), feature_dims=(TEXT_DIM, 5, 20), **kwargs):
    # One reconstruction head: faithful mode needs heads that divide each length, and 25 divides none of these.
    params = dataclasses.replace(get_preset(preset_name).tfr_net, num_temporal_head=1)
    torch.manual_seed(0)
    return TFRNet(params, seq_lens, feature_dims, text_mode="frozen", **kwargs).eval()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_for_every_preset(name):
    preset = get_preset(name)
    dims = (TEXT_DIM, *preset.feature_dims[1:])
    model = frozen_model(name, preset.seq_lens, dims)
    batch = make_batch(preset.seq_lens, dims)
    with torch.no_grad():
        out = model(batch)
        hidden = torch.randn(2, preset.seq_lens[1], 3 * preset.tfr_net.common_dim)
        reconstructed = model.reconstruct(1, hidden, torch.ones(2, preset.seq_lens[1]))
    assert out["prediction"].shape == (2,)
    assert out["recon_loss"].shape == (3,) and torch.isfinite(out["recon_loss"]).all()
    assert reconstructed.shape == (2, preset.seq_lens[1], preset.feature_dims[1])


def test_sims_with_heads_that_do_not_divide_the_length():
    params = get_preset("sims").tfr_net
    params = type(params)(**{**params.__dict__, "num_temporal_head": 25})
    # Per-sample form: the largest divisor of each length not above 25 (39 -> 13, 400 -> 25, 55 -> 11).
    model = TFRNet(params, (39, 400, 55), (TEXT_DIM, 33, 709), text_mode="frozen")
    assert [r.layers[0].heads for r in model.reconstructors] == [13, 25, 11]
    with pytest.raises(ValueError, match="faithful mode: num_temporal_head 25 does not divide the text length 39"):
        TFRNet(params, (39, 400, 55), (TEXT_DIM, 33, 709), text_mode="frozen", faithful=True)


def pad_with_noise(batch):
    noisy = {key: value.clone() for key, value in batch.items()}
    for name in ("audio", "vision"):
        padding = torch.arange(noisy[name].shape[1])[None] >= noisy[f"{name}_lengths"][:, None]
        for key in (name, f"{name}_m"):
            noisy[key][padding] = 7.0
    text_padding = noisy["text_bert"][:, 1] == 0
    noisy["text_m"][text_padding] = -5.0
    return noisy


@pytest.mark.parametrize("use_simam", [False, True])
def test_padded_values_change_nothing(use_simam):
    model = frozen_model(simam=use_simam)
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    with torch.no_grad():
        clean, noisy = model(batch), model(pad_with_noise(batch))
    torch.testing.assert_close(clean["prediction"], noisy["prediction"])
    torch.testing.assert_close(clean["recon_loss"], noisy["recon_loss"])


def test_faithful_model_sees_padding_as_upstream_does():
    model = frozen_model(faithful=True)
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    with torch.no_grad():
        assert not torch.allclose(model(batch)["prediction"], model(pad_with_noise(batch))["prediction"])


def test_faithful_reconstruction_attends_across_the_batch():
    for faithful, expect_change in ((False, False), (True, True)):
        model = frozen_model(faithful=faithful)
        with torch.no_grad():
            hidden = torch.randn(2, 20, 90)
            other = hidden.clone()
            other[0] += torch.randn(20, 90)  # the first sample only
            valid = torch.ones(2, 20)
            second = model.reconstruct(1, hidden, valid)[1], model.reconstruct(1, other, valid)[1]
        # Causal over the batch axis: sample 1 sees sample 0 in the faithful form, never in the per-sample one.
        assert (not torch.allclose(*second)) == expect_change


def test_reconstruction_loss_covers_exactly_the_dropped_positions():
    model = frozen_model()
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    for name in ("text", "audio", "vision"):
        batch[name].requires_grad_(True)
    out = model(batch)
    out["recon_loss"].sum().backward()
    for name in ("text", "audio", "vision"):
        valid = (
            batch["text_bert"][:, 1]
            if name == "text"
            else (torch.arange(batch[name].shape[1])[None] < batch[f"{name}_lengths"][:, None]).long()
        )
        dropped = (valid - batch[f"{name}_keep"]).bool()
        touched = batch[name].grad.abs().sum(dim=-1) > 0
        assert dropped.any()
        assert torch.equal(touched, dropped), name


def test_reconstruction_loss_value():
    model = frozen_model()
    model.params = type(model.params)(**{**model.params.__dict__, "weight_sim_loss": 0.0})
    prediction, target = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    missing = torch.zeros(2, 6)
    missing[0, 1] = missing[1, 4] = 1
    expected = (
        F.smooth_l1_loss(prediction[0, 1], target[0, 1], reduction="sum")
        + F.smooth_l1_loss(prediction[1, 4], target[1, 4], reduction="sum")
    ) / (8 + 1e-4)
    torch.testing.assert_close(model.reconstruction_loss(prediction, target, missing), expected)


def test_bigru_matches_gru_on_packed_sequences():
    torch.manual_seed(0)
    reference = torch.nn.GRU(7, 4, num_layers=3, bidirectional=True, batch_first=True)
    ours = BiGRU(7, 4, 3)
    for layer in range(3):
        for weight in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours.ahead[layer], f"{weight}_l0").data.copy_(getattr(reference, f"{weight}_l{layer}"))
            getattr(ours.behind[layer], f"{weight}_l0").data.copy_(getattr(reference, f"{weight}_l{layer}_reverse"))
    x, lengths = torch.randn(3, 9, 7, requires_grad=True), torch.tensor([9, 4, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=9)[0]
    actual = ours(x, lengths)
    torch.testing.assert_close(actual, expected)
    # The same gradients, for the input and for every weight (PairedGRU's backward is written by hand).
    weights = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), [x, *reference.parameters()])
    actual_grads = torch.autograd.grad((actual * weights).sum(), [x, *ours.parameters()])
    torch.testing.assert_close(actual_grads[0], expected_grads[0])
    ours_by_name = dict(zip((name for name, _ in ours.named_parameters()), actual_grads[1:]))
    for name, grad in zip((name for name, _ in reference.named_parameters()), expected_grads[1:]):
        weight, layer = re.fullmatch(r"(\w+)_l(\d+)(?:_reverse)?", name).groups()
        direction = "behind" if name.endswith("_reverse") else "ahead"
        torch.testing.assert_close(ours_by_name[f"{direction}.{layer}.{weight}_l0"], grad, msg=name)
    with torch.no_grad():  # inference steps without keeping what backward needs: the same outputs
        torch.testing.assert_close(ours(x, lengths), expected)


def test_paired_gru_gradients_are_the_derivatives():
    torch.manual_seed(0)
    shapes = [(2, 3, 5, 4), (2, 9, 4), (2, 9, 3), (2, 9), (2, 9)]
    inputs = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
    assert torch.autograd.gradcheck(PairedGRU.apply, inputs)


def test_simam_statistics_use_only_valid_steps():
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out = simam(x, mask)
    kept = x[0, mask[0].bool()]
    mean, variance = kept.mean(dim=0), kept.var(dim=0)
    expected = x[0, 0] * torch.sigmoid((x[0, 0] - mean) ** 2 / (4 * (variance + 1e-4)) + 0.5)
    torch.testing.assert_close(out[0, 0], expected)
    changed = x.clone()
    changed[0, 2] = 100.0
    torch.testing.assert_close(simam(changed, mask)[0, mask[0].bool()], out[0, mask[0].bool()])
    torch.testing.assert_close(out[0, 2], x[0, 2])


def test_simam_changes_the_model():
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    with torch.no_grad():
        assert not torch.allclose(frozen_model()(batch)["prediction"], frozen_model(simam=True)(batch)["prediction"])


class TinyEncoder(torch.nn.Module):
    """Stands in for a Hugging Face model: ids -> last_hidden_state."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(200, TEXT_DIM)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return type("Output", (), {"last_hidden_state": self.embedding(input_ids)})


@pytest.mark.parametrize("faithful", [False, True])
def test_finetune_target_is_detached_unless_faithful(faithful):
    params = get_preset("mosi", "emt-dlfr").tfr_net  # one reconstruction head, which divides the lengths
    model = TFRNet(params, (8, 20, 12), (TEXT_DIM, 5, 20), text_encoder=TinyEncoder(), faithful=faithful)
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    batch["text_bert"][:, 0] = torch.randint(1, 200, (2, 8))
    batch["text_bert_m"] = batch["text_bert"].clone()
    corrupted, target = model.text_inputs(batch)
    assert corrupted.requires_grad
    assert target.requires_grad == faithful
    assert model(batch)["prediction"].shape == (2,)


def test_text_mode_and_encoder_must_agree():
    params = get_preset("mosi").tfr_net
    with pytest.raises(ValueError, match="finetune mode needs a text encoder"):
        TFRNet(params, (8, 20, 12), (TEXT_DIM, 5, 20), text_mode="finetune")
    with pytest.raises(ValueError, match="unknown text mode"):
        TFRNet(params, (8, 20, 12), (TEXT_DIM, 5, 20), text_mode="cached")


def test_attention_dropout_by_keys_keeps_padding_masked_and_rows_non_empty():
    layer = TFRNet(get_preset("mosi").tfr_net, (8, 20, 12), (TEXT_DIM, 5, 20), text_mode="frozen").intra[1].layers[0]
    padding = torch.zeros(3, 1, 1, 10, dtype=torch.bool)
    padding[0, ..., :7] = padding[1, ..., :1] = padding[2, ..., :10] = True
    for _ in range(20):
        allowed = layer.dropped_keys(padding, 3, 10, "cpu", rate=0.9)
        assert allowed.shape == (3, layer.heads, 1, 10)
        assert not (allowed & ~padding).any()
        assert allowed.any(dim=-1).all()
    assert layer.dropped_keys(padding, 3, 10, "cpu", rate=0.5).sum() < padding.sum() * layer.heads


def test_training_mode_outputs_stay_finite_with_key_dropout():
    model = frozen_model().train()
    out = model(make_batch((8, 20, 12), (TEXT_DIM, 5, 20)))
    assert torch.isfinite(out["prediction"]).all() and torch.isfinite(out["recon_loss"]).all()


def test_prediction_without_reconstruction_is_the_same():
    model = frozen_model()
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    with torch.no_grad():
        full, light = model(batch), model(batch, with_reconstruction=False)
    torch.testing.assert_close(full["prediction"], light["prediction"])
    assert light["recon_loss"] is None


def test_mixed_precision_forward_and_backward():
    model = frozen_model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(make_batch((8, 20, 12), (TEXT_DIM, 5, 20)))
    (out["prediction"].float().sum() + out["recon_loss"].sum()).backward()
    assert out["prediction"].dtype == torch.bfloat16
    assert torch.isfinite(out["recon_loss"]).all()
    assert all(torch.isfinite(w.grad).all() for w in model.fusion[1].gru.parameters())


@pytest.mark.parametrize("faithful", [False, True])
def test_activation_checkpointing_on_and_off_give_the_same_loss_and_gradients(faithful):
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))

    def step(checkpointing):
        model = frozen_model(faithful=faithful, checkpointing=checkpointing).train()
        # Dropout draws from the global generator: the recomputation in backward must draw the same masks.
        torch.manual_seed(5)
        out = model(batch)
        (out["prediction"].sum() + out["recon_loss"].sum()).backward()
        return out["recon_loss"].detach(), {name: w.grad.clone() for name, w in model.named_parameters()}

    checkpointed_loss, checkpointed_grads = step(True)
    plain_loss, plain_grads = step(False)
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    assert checkpointed_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


@pytest.mark.parametrize("checkpointing", [False, True, "text-encoder"])
def test_checkpointing_setting_reaches_bert_layers(checkpointing):
    from transformers import BertConfig, BertModel

    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=TEXT_DIM,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        )
    )
    model = TFRNet(
        get_preset("mosi", "emt-dlfr").tfr_net,
        (8, 20, 12),
        (TEXT_DIM, 5, 20),
        text_encoder=bert,
        checkpointing=checkpointing,
    )
    assert bert.is_activation_checkpointing == bool(checkpointing)
    encoders = [*model.intra, *model.cross.values(), *model.reconstructors]
    assert all(encoder.checkpointing == (checkpointing is True) for encoder in encoders)


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("use_simam", [False, True])
def test_predictions_never_read_the_keep_masks(faithful, use_simam):
    # The simulator's keep masks say which steps were dropped, which a deployed model cannot know: only the
    # reconstruction loss may read them.
    batch = make_batch((8, 20, 12), (TEXT_DIM, 5, 20))
    other = dict(batch)
    for name in ("text", "audio", "vision"):
        other[f"{name}_keep"] = 1 - batch[f"{name}_keep"]
    model = frozen_model(faithful=faithful, simam=use_simam)
    for training in (False, True):
        model.train(training)
        outputs = []
        for keep_masks in (batch, other):
            torch.manual_seed(3)  # the same dropout in train mode
            outputs.append(model(keep_masks, with_reconstruction=True))
        torch.testing.assert_close(outputs[0]["prediction"], outputs[1]["prediction"], rtol=0, atol=0)
        assert not torch.allclose(outputs[0]["recon_loss"], outputs[1]["recon_loss"])  # the loss does read them


def test_simam_gates_every_valid_step_and_passes_padding():
    x = torch.randn(1, 5, 2)
    valid = torch.tensor([[1, 1, 1, 0, 0]])
    out = simam(x, valid)
    assert not torch.equal(out[0, :3], x[0, :3])
    torch.testing.assert_close(out[0, 3:], x[0, 3:])


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_kept_masks_keep_one_minus_the_rate_of_odd_sized_shapes(rate):
    torch.manual_seed(0)
    first, second = kept((3, 7, 11_111), rate, "cpu"), kept((3, 7, 11_111), rate, "cpu")
    assert first.shape == (3, 7, 11_111) and first.dtype == torch.bool
    assert abs(float(first.float().mean()) - (1 - rate)) < 0.003
    assert rate == 0 or not torch.equal(first, second)  # fresh draws each call
    assert rate == 0 or abs(float((first & second).float().mean()) - (1 - rate) ** 2) < 0.003  # independent


@pytest.mark.parametrize("allowed", ["none", "causal", "per-sample keys"])
def test_weight_dropout_attention_is_softmax_attention_with_dropped_weights(allowed):
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 3, length, 4, dtype=torch.float64, requires_grad=True) for length in (7, 9, 9))
    allowed = {"none": None, "causal": causal_mask(7, 9, "cpu"), "per-sample keys": torch.rand(5, 1, 1, 9) > 0.3}[
        allowed
    ]
    keep = torch.rand(5, 3, 7, 9) >= 0.3
    scores = q @ k.transpose(-1, -2) / 2
    if allowed is not None:
        scores = scores.masked_fill(~allowed, -torch.inf)
    expected = (torch.softmax(scores, dim=-1) * keep / 0.7) @ v
    WeightDropoutAttention.SLICE_ELEMENTS, default = 2 * 3 * 7 * 9, WeightDropoutAttention.SLICE_ELEMENTS
    try:  # slices of two samples: the rows of a slice, and the last short slice, land where they belong
        torch.testing.assert_close(WeightDropoutAttention.apply(q, k, v, allowed, keep, 0.3), expected)
        assert torch.autograd.gradcheck(lambda *qkv: WeightDropoutAttention.apply(*qkv, allowed, keep, 0.3), (q, k, v))
    finally:
        WeightDropoutAttention.SLICE_ELEMENTS = default


@pytest.mark.parametrize("compiled", [True, False])  # robustmm's kernel (where it builds) or `kept` and a `where`
def test_cpu_dropout_zeroes_the_rate_and_scales_the_rest(compiled):
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.2, training=True, compiled=compiled)
    assert abs(float((y == 0).float().mean()) - 0.2) < 0.005
    assert set(y.unique().tolist()) == {0.0, 1.25}
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient passes through the kept elements, scaled
    assert dropout(x, 0.2, training=False) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dropout(torch.ones(4, 4).to(torch.bfloat16), 0.5, training=True).dtype == torch.bfloat16

"""Faithful mode is MMSA 2.2.1's TFR_NET: the same predictions, reconstruction losses, gradients and training.

MMSA's own modules (PyPI MMSA==2.2.1, in the test extra) and robustmm's `faithful=True` model are built at small
MOSI-like shapes with a tiny random BERT on both sides, MMSA's weights are copied with `from_mmsa_state_dict`,
and both see the same batches (padding, frames dropped at rates 0, 0.5, 0.9). The training loops are compared by
running MMSA's own trainer (`trains/missingTask/TFR_NET.py::do_train`) and robustmm's `train` on the same data.
"""

import functools
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

mmsa_model = pytest.importorskip(
    "MMSA.models.missingTask.TFR_NET.model",
    reason="the reference MMSA==2.2.1 is not installed (pip install -e '.[test]')",
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from faithful_vs_mmsa import mmsa_args  # noqa: E402 - MMSA's arguments, as the benchmark builds them

from robustmm import train as training  # noqa: E402
from robustmm.models.tfr_net import TFRNet, from_mmsa_state_dict  # noqa: E402
from robustmm.presets import TFRNetParams, custom_preset  # noqa: E402
from robustmm.text_encoder import TextEncoder  # noqa: E402

ATOL = 1e-5
SEQ_LENS = (8, 12, 10)
FEATURE_DIMS = (32, 5, 7)  # text: the tiny BERT's hidden size
UNK, CLS, SEP = 100, 101, 102
VOCAB = 120

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_params(**changes) -> TFRNetParams:
    """Upstream's structure (d 30, 6 heads, kernels 1/5/3, 3 intra and `nlevels` cross layers), small elsewhere,
    every dropout off so that train mode is deterministic."""
    settings = dict(
        nlevels=2,
        attn_dropout=(0.0, 0.0, 0.0),
        relu_dropout=0.0,
        embed_dropout=0.0,
        res_dropout=0.0,
        text_dropout=0.0,
        fusion_hidden=(8, 6, 10),
        fusion_gru_layers=2,
        fusion_dropout=0.0,
        cls_hidden_dim=16,
        cls_dropout=0.0,
        recon_weights=(5.0, 2.0, 20.0),
        weight_sim_loss=5.0,
        num_temporal_head=2,
        batch_size=6,
    )
    return TFRNetParams(**{**settings, **changes})


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT (MMSA's BertTextEncoder loads a name or folder with BertModel/BertTokenizer)."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=FEATURE_DIMS[0],
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    special = {0: "[PAD]", UNK: "[UNK]", CLS: "[CLS]", SEP: "[SEP]", 103: "[MASK]"}
    (folder / "vocab.txt").write_text("\n".join(special.get(i, f"tok{i}") for i in range(VOCAB)) + "\n")
    return folder


@pytest.fixture
def local_bert(bert_dir, monkeypatch):
    """MMSA's TFR_NET builds BertTextEncoder('bert-base-uncased'): point it at the tiny local BERT."""
    from MMSA.models.subNets.BertTextEncoder import BertTextEncoder

    monkeypatch.setattr(mmsa_model, "BertTextEncoder", functools.partial(BertTextEncoder, pretrained=str(bert_dir)))
    return bert_dir


def build_pair(params: TFRNetParams, bert_dir, seed: int = 0):
    """MMSA's TFR_NET and robustmm's faithful TFRNet with MMSA's weights."""
    from transformers import BertModel

    torch.manual_seed(seed)
    reference = mmsa_model.TFR_NET(mmsa_args(params, SEQ_LENS, FEATURE_DIMS))
    ours = TFRNet(params, SEQ_LENS, FEATURE_DIMS, text_encoder=BertModel.from_pretrained(bert_dir), faithful=True)
    ours.load_state_dict(from_mmsa_state_dict(reference.state_dict()))
    return reference, ours


def make_batch(rate: float, seed: int, size: int = 6, keep_first_frame: bool = False) -> dict:
    """Padding (lengths below the maximum, at least one full row) and frames dropped at `rate` as upstream's
    generate_m drops them: kept = uniform > rate within the length, [CLS] and [SEP] always kept, dropped tokens
    become [UNK], dropped frames zeros. `keep_first_frame` keeps every row's first audio and vision frame."""
    rng = np.random.default_rng(seed)
    batch = {}
    text_len, audio_len, vision_len = SEQ_LENS
    lengths = [rng.integers(3, length + 1, size) for length in SEQ_LENS]
    for lengths_m, length in zip(lengths, SEQ_LENS):
        lengths_m[0] = length
    valid = [np.arange(length)[None, :] < lengths_m[:, None] for lengths_m, length in zip(lengths, SEQ_LENS)]
    keep = [(rng.uniform(size=v.shape) > rate) & v for v in valid]
    rows = np.arange(size)
    keep[0][:, 0] = keep[0][rows, lengths[0] - 1] = True
    if keep_first_frame:
        keep[1][:, 0] = keep[2][:, 0] = True
    ids = rng.integers(104, VOCAB, (size, text_len)) * valid[0]
    ids[:, 0], ids[rows, lengths[0] - 1] = CLS, SEP
    ids_m = np.where(keep[0], ids, UNK) * valid[0]
    text = np.stack([ids, valid[0], np.zeros_like(ids)], axis=1)
    text_m = np.stack([ids_m, valid[0], np.zeros_like(ids)], axis=1)
    batch["text_bert"], batch["text_bert_m"] = torch.as_tensor(text), torch.as_tensor(text_m)
    for index, name in ((1, "audio"), (2, "vision")):
        features = (
            rng.normal(size=(size, SEQ_LENS[index], FEATURE_DIMS[index])).astype(np.float32) * valid[index][:, :, None]
        )
        batch[name] = torch.as_tensor(features)
        batch[f"{name}_m"] = torch.as_tensor(features * keep[index][:, :, None])
        batch[f"{name}_lengths"] = torch.as_tensor(lengths[index])
    for index, name in enumerate(("text", "audio", "vision")):
        batch[f"{name}_keep"] = torch.as_tensor(keep[index].astype(np.float32))
    batch["labels"] = torch.as_tensor(rng.uniform(-3, 3, size).astype(np.float32))
    return batch


def mmsa_inputs(batch: dict) -> tuple:
    """MMSA's forward arguments, as its data loader and trainer hand them (`*_mask` from the lengths)."""
    steps = {name: torch.arange(batch[name].shape[1])[None, :] for name in ("audio", "vision")}
    mask = {name: (steps[name] < batch[f"{name}_lengths"][:, None]).long() for name in steps}
    return (
        (batch["text_bert"].float(), batch["text_bert_m"].float(), batch["text_keep"]),
        (batch["audio"], batch["audio_m"], mask["audio"], batch["audio_keep"]),
        (batch["vision"], batch["vision_m"], mask["vision"], batch["vision_keep"]),
    )


def mmsa_recon_losses(reference, inputs) -> torch.Tensor:
    """The three unweighted reconstruction losses of MMSA's own forward (one weight at 1, the others at 0)."""
    weights, losses = list(reference.args.weight_gen_loss), []
    for modality in range(3):
        reference.args.weight_gen_loss = [float(modality == m) for m in range(3)]
        losses.append(reference(*inputs)[1].reshape(()))
    reference.args.weight_gen_loss = weights
    return torch.stack(losses)


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def assert_gradient_close(actual, expected, name):
    """To 1e-5 of the tensor's largest gradient (at least 1). Upstream's position rule gives all-zero steps whose
    LayerNorm (variance 0, eps 1e-5) scales gradients by 316 per layer: some tensors reach 1e6, and MMSA's
    softmax runs in float32 even in a float64 model."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual / scale, expected / scale, atol=ATOL, rtol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_faithful_forward_is_mmsa(local_bert, rate, mode):
    reference, ours = build_pair(tiny_params(), local_bert)
    batch = make_batch(rate, seed=int(rate * 10))
    inputs = mmsa_inputs(batch)
    for model in (reference, ours):
        model.train(mode == "train")
    with torch.no_grad():
        # Each call updates BatchNorm's running statistics in train mode: the loss-by-loss calls come after.
        prediction, weighted = reference(*inputs)
        out = ours(batch)
        assert_close(out["prediction"], prediction.squeeze(-1))
        assert_close((torch.tensor(tiny_params().recon_weights) * out["recon_loss"]).sum(), weighted.reshape(()))
        assert_close(out["recon_loss"], mmsa_recon_losses(reference, inputs))
    if rate:
        # The position rule matters here: dropped frames and padding give steps whose projection is exactly 0.
        assert (batch["audio_keep"] == 0).any() and (batch["vision_keep"] == 0).any()


def mapped_gradients(reference) -> dict[str, torch.Tensor]:
    return from_mmsa_state_dict(
        {name: param.grad for name, param in reference.named_parameters() if param.grad is not None}
    )


def capture_fusion_inputs(reference):
    """Hooks that collect the inputs of MMSA's three fusion encoders (the steps that are max-pooled)."""
    encoders = [getattr(reference.fusion_subnet.Model, f"{m}_encoder") for m in ("text", "audio", "vision")]
    inputs = []
    hooks = [encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for encoder in encoders]
    return hooks, inputs


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9])
def test_faithful_gradients_are_mmsa(local_bert, rate):
    """Max pooling has no unique gradient where steps tie, and a row whose frames are all zero gives equal
    steps, on which each implementation picks its own subgradient by float rounding: here every row keeps its
    first frame (the forward test covers fully dropped rows), and the test checks that no step repeats.
    In float64: float32 rounding, scaled by 316 per LayerNorm at the all-zero steps, reaches 1e-5."""
    params = tiny_params()
    reference, ours = (model.double() for model in build_pair(params, local_bert, seed=1))
    batch = make_batch(rate, seed=10 + int(rate * 10), keep_first_frame=True)
    batch = {key: value.double() if value.is_floating_point() else value for key, value in batch.items()}
    reference.train(), ours.train()
    hooks, pooled = capture_fusion_inputs(reference)
    prediction, weighted = reference(*mmsa_inputs(batch))
    for hook in hooks:
        hook.remove()
    for steps in pooled:
        assert not ((steps[:, :, None] == steps[:, None, :]).all(-1).sum(dim=(1, 2)) > steps.shape[1]).any()
    (torch.nn.functional.l1_loss(prediction, batch["labels"].view(-1, 1)) + weighted).sum().backward()
    out = ours(batch)
    recon = (torch.tensor(params.recon_weights, dtype=torch.float64) * out["recon_loss"]).sum()
    (torch.nn.functional.l1_loss(out["prediction"], batch["labels"]) + recon).backward()
    expected = mapped_gradients(reference)
    compared = 0
    for name, param in ours.named_parameters():
        if name in expected:
            assert_gradient_close(param.grad, expected[name], name)
            compared += 1
        else:  # unused by both (BERT's pooler)
            assert param.grad is None, name
    assert compared > 100 and any(name.startswith("text_encoder.") for name in expected)
    if rate:
        assert (batch["audio_keep"] == 0).any() and (batch["vision_keep"] == 0).any()


def test_faithful_positions_follow_fairseq_make_positions():
    """A projected step whose channel 0 is exactly 0 gets MMSA's padding position (a zero embedding)."""
    from MMSA.models.subNets.transformers_encoder.transformer import TransformerEncoder as MMSAEncoder

    params = tiny_params()
    torch.manual_seed(3)
    reference = MMSAEncoder(30, 6, 2, attn_mask=True, position_embedding=True).eval()
    model = TFRNet(params, SEQ_LENS, FEATURE_DIMS, text_mode="frozen", faithful=True).eval()
    ours = model.intra[0]
    state = from_mmsa_state_dict({f"align_subnet.Model.trans_l_mem.{k}": v for k, v in reference.state_dict().items()})
    ours.load_state_dict({k.removeprefix("intra.0."): v for k, v in state.items()}, strict=False)
    ours.layers = ours.layers[:2]
    x = torch.randn(2, 9, 30)
    x[0, 3:6] = 0.0
    x[1, 0, 0] = 0.0  # channel 0 alone decides, as in make_positions
    with torch.no_grad():
        assert_close(
            ours(x, mask=model.attention_mask(0, 0, [torch.ones(2, 9)])), reference(x.transpose(0, 1)).transpose(0, 1)
        )


def test_faithful_init_is_fairseqs():
    model = TFRNet(tiny_params(), SEQ_LENS, FEATURE_DIMS, text_mode="frozen", faithful=True)
    layer = model.intra[1].layers[0]
    for linear in (layer.query, layer.key_value, layer.out, layer.fc1, layer.fc2):
        assert torch.count_nonzero(linear.bias) == 0
    # Xavier-uniform over the joint (3 d, d) in-projection: bound sqrt(6 / (d + 3 d)).
    in_proj = torch.cat([layer.query.weight, layer.key_value.weight])
    assert in_proj.abs().max() <= (6 / (4 * 30)) ** 0.5
    assert in_proj.abs().max() > 0.9 * (6 / (4 * 30)) ** 0.5
    assert layer.fc1.weight.abs().max() <= (6 / (30 + 120)) ** 0.5


def test_faithful_refuses_heads_where_upstream_crashes(local_bert):
    params = tiny_params(num_temporal_head=25)
    seq_lens, dims = (39, 400, 55), (32, 33, 709)  # SIMS: 25 heads do not divide 39 or 55
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        mmsa_model.TFR_NET(mmsa_args(params, seq_lens, dims))
    with pytest.raises(
        ValueError,
        match=r"faithful mode: num_temporal_head 25 does not divide the text length 39, "
        r"vision length 55; upstream TFR-Net crashes here",
    ):
        TFRNet(params, seq_lens, dims, text_mode="frozen", faithful=True)
    assert TFRNet(params, seq_lens, dims, text_mode="frozen").reconstructors[0].layers[0].heads == 13


def test_faithful_refuses_empty_modalities_where_upstream_crashes(local_bert):
    reference, ours = build_pair(tiny_params(), local_bert)
    batch = make_batch(0.5, seed=4)
    batch["vision_lengths"][2] = 0
    batch["vision"][2] = batch["vision_m"][2] = batch["vision_keep"][2] = 0.0
    reference.eval(), ours.eval()
    with pytest.raises(RuntimeError, match="greater than 0"), torch.no_grad():
        reference(*mmsa_inputs(batch))
    with (
        pytest.raises(
            ValueError,
            match=r"faithful mode: the batch has samples with no vision steps \(length 0\); "
            r"upstream TFR-Net crashes",
        ),
        torch.no_grad(),
    ):
        ours(batch)


def make_split(rng, size: int) -> dict:
    """A split in robustmm's format: texts of 4 tokens or more, full-length audio and vision."""
    text_len = SEQ_LENS[0]
    text_lengths = rng.integers(4, text_len + 1, size)
    valid = np.arange(text_len)[None, :] < text_lengths[:, None]
    ids = rng.integers(104, VOCAB, (size, text_len)) * valid
    ids[:, 0], ids[np.arange(size), text_lengths - 1] = CLS, SEP
    split = {"text_bert": np.stack([ids, valid, np.zeros_like(ids)], axis=1).astype(np.int64)}
    labels = np.zeros(size)
    for index, name in ((1, "audio"), (2, "vision")):
        features = rng.normal(size=(size, SEQ_LENS[index], FEATURE_DIMS[index]))  # float64
        split[name], split[f"{name}_lengths"] = features, np.full(size, SEQ_LENS[index])
        labels += features[:, :, 0].mean(axis=1)
    split["regression_labels"] = np.clip(labels + rng.normal(0, 0.3, size), -3, 3).astype(np.float32)
    return split


class ShuffledBatches:
    """MMSA's DataLoader(shuffle=True) in the order robustmm draws: both loops take their permutations from
    one generator seeded as robustmm's run (train, then valid, each epoch), and the batches hold the tensors
    robustmm trains on, under MMSA's keys."""

    def __init__(self, tensors: dict, batch_size: int, generator: torch.Generator):
        self.tensors, self.batch_size, self.generator = tensors, batch_size, generator

    def __len__(self):
        return -(-len(self.tensors["labels"]) // self.batch_size)

    def __iter__(self):
        for index in torch.randperm(len(self.tensors["labels"]), generator=self.generator).split(self.batch_size):
            batch = {key: value[index] for key, value in self.tensors.items()}
            (text, text_m, text_keep), audio, vision = mmsa_inputs(batch)
            yield {
                "text": text,
                "text_m": text_m,
                "text_missing_mask": text_keep,
                "audio": audio[0],
                "audio_m": audio[1],
                "audio_mask": audio[2],
                "audio_missing_mask": audio[3],
                "vision": vision[0],
                "vision_m": vision[1],
                "vision_mask": vision[2],
                "vision_missing_mask": vision[3],
                "labels": {"M": batch["labels"].view(-1, 1)},
            }


def test_faithful_training_is_mmsa_trainer(local_bert, tmp_path, monkeypatch):
    """robustmm's `train` and MMSA's own `do_train`, from the same weights on the same batches (float64).

    5 batches of 6 per epoch with update_epochs 2: gradients zeroed every 2 batches, 7 optimiser steps per
    epoch; the reconstruction loss from epoch 2; ReduceLROnPlateau with patience 0; early stop after 2 epochs
    without a better validation loss (mean of batch means, rounded). Every validation loss, learning-rate cut,
    the best and the last epoch are upstream's, and the parameters after every epoch agree to 1e-5, except
    the attention key biases: their exact gradient is 0 (softmax ignores a shift shared by all keys), so
    Adam (eps 1e-8) turns each implementation's rounding (MMSA's softmax runs in float32) into steps of the
    learning rate's size; they change no output.

    Rows are full length: an all-zero step (padding, a run of dropped frames) meets LayerNorm at variance 0,
    whose gradients reach 1e6 (see the gradient test), and rounding so scaled, then normalised by Adam,
    moves the two runs apart within an epoch (6e-3 after epoch 2 with padding) although their gradients agree."""
    from MMSA.models import AMIO
    from transformers import BertModel

    trainer_module = importlib.import_module("MMSA.trains.missingTask.TFR_NET")
    params = tiny_params(update_epochs=2, patience=0, early_stop=2, learning_rate_other=1e-3, learning_rate_bert=1e-3)
    preset = custom_preset("custom", seq_lens=SEQ_LENS, feature_dims=FEATURE_DIMS).replace(tfr_net=params)
    rng = np.random.default_rng(7)
    loaded = {name: make_split(rng, size) for name, size in (("train", 26), ("valid", 10), ("test", 8))}
    config = training.RunConfig(
        dataset="custom",
        rate=0.2,
        seed=5,
        text_mode="finetune",
        faithful=True,
        device="cpu",
        max_epochs=30,
        progress=False,
    )
    encoder = TextEncoder(str(local_bert), load_weights=False)
    tensors = training.prepare_splits(loaded, config, encoder, {})
    for name in ("audio", "vision"):  # no row without frames (max-pool ties, see the gradient test)
        assert (tensors["train"][f"{name}_keep"].sum(dim=1) > 0).all()

    torch.manual_seed(2)
    args = mmsa_args(
        params,
        SEQ_LENS,
        FEATURE_DIMS,
        model_save_path=tmp_path / "mmsa.pth",
        cur_seed=config.seed,
        early_stop=params.early_stop,
        patience=params.patience,
        update_epochs=params.update_epochs,
        grad_clip=params.grad_clip,
        learning_rate_bert=params.learning_rate_bert,
        learning_rate_other=params.learning_rate_other,
        weight_decay_bert=params.weight_decay_bert,
        weight_decay_other=params.weight_decay_other,
    )
    reference = AMIO(args).double()
    ours = TFRNet(params, SEQ_LENS, FEATURE_DIMS, text_encoder=BertModel.from_pretrained(local_bert), faithful=True)
    ours.load_state_dict(from_mmsa_state_dict(reference.state_dict()))
    ours.double()
    monkeypatch.setattr(training, "build_model", lambda *args: ours)
    optimizers, real_optimizer = [], training.build_optimizer
    monkeypatch.setattr(
        training, "build_optimizer", lambda *args: optimizers.append(real_optimizer(*args)) or optimizers[-1]
    )

    ours_epochs, real_epoch = [], training.train_epoch

    def recording_epoch(model, *args):
        loss = real_epoch(model, *args)
        ours_epochs.append({name: value.clone() for name, value in model.state_dict().items()})
        return loss

    monkeypatch.setattr(training, "train_epoch", recording_epoch)
    result = training.train(loaded, preset, config, tmp_path / "ours", encoder)

    # MMSA 2.2.1 passes verbose=True, which torch 2.13's ReduceLROnPlateau no longer takes.
    schedulers = []

    def plateau(optimizer, verbose, **settings):
        schedulers.append(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **settings))
        return schedulers[-1]

    monkeypatch.setattr(trainer_module, "ReduceLROnPlateau", plateau)
    trainer = trainer_module.TFR_NET(args)
    mmsa_epochs, mmsa_valid, real_test = [], [], trainer.do_test

    def recording_test(model, dataloader, mode="VAL"):
        mmsa_epochs.append({name: value.clone() for name, value in from_mmsa_state_dict(model.state_dict()).items()})
        assert len(mmsa_epochs) <= config.max_epochs, "MMSA did not stop within robustmm's epoch cap"
        results = real_test(model, dataloader, mode)
        mmsa_valid.append(results["Loss"])
        return results

    trainer.do_test = recording_test
    generator = torch.Generator().manual_seed(config.seed)
    loaders = {name: ShuffledBatches(tensors[name], params.batch_size, generator) for name in ("train", "valid")}
    trainer.do_train(reference, loaders)

    assert [epoch["valid_loss"] for epoch in result["history"]] == mmsa_valid
    assert len(ours_epochs) == len(mmsa_epochs) == result["epochs"] > params.early_stop
    assert result["best_epoch"] == 1 + mmsa_valid.index(min(mmsa_valid))
    mmsa_lrs = [group["lr"] for group in schedulers[0].optimizer.param_groups]
    assert [group["lr"] for group in optimizers[0].param_groups] == pytest.approx(mmsa_lrs)
    assert mmsa_lrs[-1] < params.learning_rate_other  # cut at least once

    def without_key_biases(state):
        return {
            name: value[len(value) // 2 :] if name.endswith("key_value.bias") else value
            for name, value in state.items()
        }

    for epoch, (state, expected) in enumerate(zip(ours_epochs, mmsa_epochs), start=1):
        state = without_key_biases(state)
        for name, value in without_key_biases(expected).items():
            torch.testing.assert_close(
                state[name],
                value,
                atol=ATOL,
                rtol=0,
                msg=lambda m, epoch=epoch, name=name: f"epoch {epoch} {name}: {m}",
            )
    best = without_key_biases(torch.load(tmp_path / "ours" / "best.pt", weights_only=False)["model"])
    mmsa_best = from_mmsa_state_dict(torch.load(tmp_path / "mmsa.pth", weights_only=False))
    for name, value in without_key_biases(mmsa_best).items():
        torch.testing.assert_close(best[name], value, atol=ATOL, rtol=0, msg=lambda m, name=name: f"best {name}: {m}")
    assert json.loads((tmp_path / "ours" / "result.json").read_text())["epochs"] == len(mmsa_valid)


def test_faithful_mode_is_float32_training():
    with pytest.raises(ValueError, match="faithful mode is upstream's float32 training"):
        training.RunConfig(dataset="mosi", faithful=True, amp=True)

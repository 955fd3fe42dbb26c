"""How far robustmm's `faithful=True` TFR-Net is from MMSA 2.2.1's TFR_NET, on the same weights and batches.

Builds MMSA's TFR_NET (the test extra installs MMSA==2.2.1) at MOSI shapes (lengths 50/375/500, audio 5 and
vision 20 dims, MMSA's 25 temporal heads) with a tiny random BERT, copies its weights into robustmm's faithful
model, and prints the largest absolute differences of the predictions, the weighted reconstruction loss and
the hidden states the fusion encoders read, per missing rate, in eval and in train mode (dropout off).

    python benchmarks/faithful_vs_mmsa.py                      # this checkout
    python benchmarks/faithful_vs_mmsa.py --checkout ../main   # another checkout's TFRNet (e.g. before a change)

The weight mapping always comes from this checkout (robustmm/models/tfr_net.py::from_mmsa_state_dict).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]
SEQ_LENS, FEATURE_DIMS, BATCH = (50, 375, 500), (32, 5, 20), 8


def mapping_function():
    spec = importlib.util.spec_from_file_location("faithful_mapping", HERE / "robustmm" / "models" / "tfr_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.from_mmsa_state_dict


def write_tiny_bert(folder: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=200,
        hidden_size=FEATURE_DIMS[0],
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    (folder / "vocab.txt").write_text("\n".join(special.get(i, f"w{i}") for i in range(200)) + "\n")


def mmsa_args(params, seq_lens=SEQ_LENS, feature_dims=FEATURE_DIMS, **extra):
    """MMSA's `args` for TFR_NET (config_regression.json's keys) from robustmm's TFRNetParams, dropouts included;
    `extra`: more keys (e.g. the trainer's)."""
    from easydict import EasyDict

    return EasyDict(
        model_name="tfr_net",
        dataset_name="mosi",
        train_mode="regression",
        KeyEval="Loss",
        device=torch.device("cpu"),
        seq_lens=list(seq_lens),
        feature_dims=list(feature_dims),
        dst_feature_dim_nheads=[params.common_dim, params.num_heads],
        nlevels=params.nlevels,
        attn_dropout=params.attn_dropout[0],
        attn_dropout_a=params.attn_dropout[1],
        attn_dropout_v=params.attn_dropout[2],
        relu_dropout=params.relu_dropout,
        embed_dropout=params.embed_dropout,
        res_dropout=params.res_dropout,
        text_dropout=params.text_dropout,
        attn_mask=True,
        conv1d_kernel_size_l=params.conv_kernels[0],
        conv1d_kernel_size_a=params.conv_kernels[1],
        conv1d_kernel_size_v=params.conv_kernels[2],
        num_temporal_head=params.num_temporal_head,
        alignmentModule="crossmodal_attn",
        generatorModule="linear",
        fusionModule="c_gate",
        recloss_type="combine",
        without_generator=False,
        weight_sim_loss=params.weight_sim_loss,
        weight_gen_loss=list(params.recon_weights),
        fusion_t_hid=params.fusion_hidden[0],
        fusion_a_hid=params.fusion_hidden[1],
        fusion_v_hid=params.fusion_hidden[2],
        fusion_gru_layers=params.fusion_gru_layers,
        fusion_drop=params.fusion_dropout,
        cls_hidden_dim=params.cls_hidden_dim,
        cls_dropout=params.cls_dropout,
        use_bert_finetune=True,
        **extra,
    )


def batch_at(rate: float, seed: int) -> tuple[dict, tuple]:
    """robustmm's batch and MMSA's forward arguments: zero padding, frames dropped as generate_m drops them."""
    rng = np.random.default_rng(seed)
    lengths = [np.maximum(rng.integers(length // 3, length + 1, BATCH), 3) for length in SEQ_LENS]
    valid = [np.arange(length)[None] < lens[:, None] for lens, length in zip(lengths, SEQ_LENS)]
    keep = [(rng.uniform(size=v.shape) > rate) & v for v in valid]
    rows = np.arange(BATCH)
    keep[0][:, 0] = keep[0][rows, lengths[0] - 1] = True
    ids = rng.integers(104, 200, (BATCH, SEQ_LENS[0])) * valid[0]
    ids[:, 0], ids[rows, lengths[0] - 1] = 101, 102
    segments = np.zeros_like(ids)
    batch = {
        "text_bert": torch.as_tensor(np.stack([ids, valid[0], segments], 1)),
        "text_bert_m": torch.as_tensor(np.stack([np.where(keep[0], ids, 100) * valid[0], valid[0], segments], 1)),
    }
    for index, name in ((1, "audio"), (2, "vision")):
        features = (
            rng.normal(size=(BATCH, SEQ_LENS[index], FEATURE_DIMS[index])).astype(np.float32) * valid[index][..., None]
        )
        batch[name], batch[f"{name}_m"] = torch.as_tensor(features), torch.as_tensor(features * keep[index][..., None])
        batch[f"{name}_lengths"] = torch.as_tensor(lengths[index])
    for index, name in enumerate(("text", "audio", "vision")):
        batch[f"{name}_keep"] = torch.as_tensor(keep[index].astype(np.float32))
    masks = [torch.as_tensor(v.astype(np.int64)) for v in valid]
    inputs = (
        (batch["text_bert"].float(), batch["text_bert_m"].float(), batch["text_keep"]),
        (batch["audio"], batch["audio_m"], masks[1], batch["audio_keep"]),
        (batch["vision"], batch["vision_m"], masks[2], batch["vision_keep"]),
    )
    return batch, inputs


def fusion_inputs(encoders) -> list[torch.Tensor]:
    captured = []
    for encoder in encoders:
        encoder.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().clone()))
    return captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=HERE, help="the robustmm checkout whose TFRNet to measure")
    parser.add_argument("--rates", default="0,0.5,0.9")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    sys.path.insert(0, str(options.checkout.resolve()))
    from robustmm.models.tfr_net import TFRNet
    from robustmm.presets import TFRNetParams

    from_mmsa_state_dict = mapping_function()
    from MMSA.models.subNets.BertTextEncoder import BertTextEncoder
    from transformers import BertModel

    mmsa = importlib.import_module("MMSA.models.missingTask.TFR_NET.model")
    torch.set_num_threads(1)
    params = TFRNetParams(num_temporal_head=25)
    dropout_off = TFRNetParams(
        **{
            **params.__dict__,
            "attn_dropout": (0.0, 0.0, 0.0),
            "relu_dropout": 0.0,
            "embed_dropout": 0.0,
            "res_dropout": 0.0,
            "text_dropout": 0.0,
            "fusion_dropout": 0.0,
            "cls_dropout": 0.0,
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_bert(Path(folder))
        mmsa.BertTextEncoder = functools.partial(BertTextEncoder, pretrained=folder)
        torch.manual_seed(options.seed)
        reference = mmsa.TFR_NET(mmsa_args(dropout_off))
        ours = TFRNet(
            dropout_off, SEQ_LENS, FEATURE_DIMS, text_encoder=BertModel.from_pretrained(folder), faithful=True
        )
    ours.load_state_dict(from_mmsa_state_dict(reference.state_dict()))
    theirs_hidden = fusion_inputs(
        [getattr(reference.fusion_subnet.Model, f"{m}_encoder") for m in ("text", "audio", "vision")]
    )
    ours_hidden = fusion_inputs(list(ours.fusion))
    weights = torch.tensor(params.recon_weights)
    print(f"TFRNet from {sys.modules['robustmm'].__file__}; MOSI shapes {SEQ_LENS}, batch {BATCH}, 25 temporal heads")
    print("mode  rate  max|d prediction|  max|d weighted recon loss|  max|d hidden| (text, audio, vision)")
    for mode in ("eval", "train"):
        for rate in (float(r) for r in options.rates.split(",")):
            batch, inputs = batch_at(rate, options.seed + int(rate * 10))
            reference.train(mode == "train"), ours.train(mode == "train")
            theirs_hidden.clear(), ours_hidden.clear()
            with torch.no_grad():
                prediction, recon = reference(*inputs)
                out = ours(batch)
            hidden = [(a - b).abs().max().item() for a, b in zip(ours_hidden, theirs_hidden)]
            print(
                f"{mode:5} {rate:4.1f}  {(out['prediction'] - prediction.squeeze(-1)).abs().max().item():17.3g}  "
                f"{((weights * out['recon_loss']).sum() - recon.reshape(())).abs().item():26.3g}  "
                + ", ".join(f"{h:.3g}" for h in hidden)
            )


if __name__ == "__main__":
    main()

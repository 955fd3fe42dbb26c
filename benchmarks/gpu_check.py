"""GPU check: TFR-Net trains on CUDA, in fp32 and in mixed precision.

Builds a small synthetic file with MOSI's lengths (50/375/500) and dims, the offline MiniLM encoder
(finetune mode), trains a few epochs per precision and checks that
- the model's parameters and every batch it sees are on the GPU,
- mixed precision really runs in bf16 (or fp16 with a gradient scaler where bf16 is missing),
- the training loss falls and stays finite;
then prints training samples/s and peak GPU memory. Exit code 0 when every check passes, 1 otherwise,
2 without CUDA. `--device cpu` runs the same checks on the CPU (bf16 autocast) to try the script itself.

    python benchmarks/gpu_check.py [--epochs 4] [--train-size 240] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from robustmm import data as feature_data
from robustmm import train as training
from robustmm.presets import get_preset
from robustmm.synthetic import make_dataset
from robustmm.text_encoder import OFFLINE_ENCODER, TextEncoder


def check_precision(amp: bool, loaded: dict, encoder: TextEncoder, device: torch.device, epochs: int) -> list[str]:
    preset = get_preset("mosi")
    config = training.RunConfig(
        dataset="mosi",
        rate=0.3,
        seed=1111,
        text_mode="finetune",
        text_encoder=OFFLINE_ENCODER,
        device=str(device),
        amp=amp,
        progress=False,
    )
    training.seed_everything(config.seed)
    tensors = training.prepare_splits(loaded, config, encoder, {})
    train_split = loaded["train"]
    seq_lens = (train_split["text_bert"].shape[2], train_split["audio"].shape[1], train_split["vision"].shape[1])
    model = training.build_model(preset, config, seq_lens, (encoder.hidden_size, 5, 20), encoder).to(device)
    optimizer = training.build_optimizer(model, preset)
    use_scaler = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    generator = torch.Generator().manual_seed(config.seed)

    seen = {"batches_elsewhere": 0, "dtypes": set()}

    def check_batch(module, args):
        seen["batches_elsewhere"] += sum(value.device.type != device.type for value in args[0].values())

    def record_dtype(module, args, output):
        seen["dtypes"].add(output.dtype)

    model.register_forward_pre_hook(check_batch)
    model.classifier[1].register_forward_hook(record_dtype)

    problems = []
    elsewhere = [name for name, value in model.state_dict().items() if value.device.type != device.type]
    if elsewhere:
        problems.append(f"{len(elsewhere)} model tensors not on {device.type}, e.g. {elsewhere[0]}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    losses, start = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        losses.append(
            training.train_epoch(model, optimizer, scaler, tensors["train"], preset, config, epoch, generator, device)
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    samples = epochs * len(tensors["train"]["labels"])

    label = "mixed precision" if amp else "fp32"
    if seen["batches_elsewhere"]:
        problems.append(f"{label}: {seen['batches_elsewhere']} batch tensors were not on {device.type}")
    expected = {torch.bfloat16, torch.float16} if amp else {torch.float32}
    if not seen["dtypes"] or not seen["dtypes"] <= expected:
        problems.append(
            f"{label}: classifier ran in {sorted(map(str, seen['dtypes']))}, expected one of {sorted(map(str, expected))}"
        )
    if not all(map(torch.isfinite, map(torch.tensor, losses))) or not losses[-1] < losses[0]:
        problems.append(f"{label}: training loss did not fall: {[round(loss, 4) for loss in losses]}")
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    dtype = "/".join(sorted(str(d).removeprefix("torch.") for d in seen["dtypes"]))
    print(
        f"{label:<16} {dtype:<9} losses {' '.join(f'{loss:.3f}' for loss in losses)}  "
        f"{samples / seconds:8.1f} train samples/s  peak GPU memory {peak:.2f} GB"
        + ("  (fp16 with gradient scaler)" if use_scaler else "")
    )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=240)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__}: nothing to check", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        print(
            f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"
        )
    dataset = make_dataset(get_preset("mosi"), sizes=(args.train_size, 48, 48), feature_dims=(384, 5, 20), seed=0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mosi_small.pkl"
        feature_data.write(dataset, path)
        loaded, _ = training.load_features(path, "mosi")
    encoder = TextEncoder(OFFLINE_ENCODER, device=device)
    problems = check_precision(False, loaded, encoder, device, args.epochs) + check_precision(
        True, loaded, encoder, device, args.epochs
    )
    for problem in problems:
        print(f"FAIL: {problem}")
    print("all checks passed" if not problems else f"{len(problems)} check(s) failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

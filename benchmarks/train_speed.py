"""Training and evaluation throughput and peak memory of TFR-Net on MOSI-shaped features, per mode.

Builds a MOSI-shaped synthetic file (1284/229/686 samples, lengths 50/375/500, audio 5 and vision 20 dims)
and a bert-base-sized encoder with random weights (MiniLM's uncased vocabulary), then in a fresh process per
mode times `--batches` training batches (wall and process CPU seconds: on a shared machine the CPU seconds
vary less) (batch 24, missing rate 0.5, reconstruction loss on, after one
warm-up batch) and the evaluation of the same number of batches, and reads the process's peak RSS.

Modes: finetune (default model, BERT trained inside), frozen (encoder outputs computed once, no grad; the
one-off encoding is timed apart), faithful (upstream quirks: BERT twice with grad, causal masks, ...), and
each with bf16 autocast where the CPU supports it (--bf16). Reference, upstream TFR-Net on this machine kind
(2 threads, batch 24, bert-base): about 1.0 training samples/s, peak RSS past 7 GB (jemalloc) or 16 GB.

    python benchmarks/train_speed.py [--batches 3] [--threads 2] [--modes finetune,frozen,faithful] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOSI_SIZES = (1284, 229, 686)
MOSI_LENS = (50, 375, 500)
MOSI_DIMS = (768, 5, 20)
BATCH = 24


def high_water_mark() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def build_inputs(folder: Path) -> tuple[Path, Path]:
    """The feature file and a bert-base-sized random encoder folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from robustmm import data
    from robustmm.presets import get_preset
    from robustmm.synthetic import make_dataset
    from robustmm.text_encoder import OFFLINE_ENCODER, resolve_encoder_path

    features = folder / "mosi_shaped.pkl"
    dataset = make_dataset(
        get_preset("mosi"),
        sizes=MOSI_SIZES,
        seq_lens=MOSI_LENS,
        feature_dims=MOSI_DIMS,
        with_text_features=False,
        seed=0,
    )
    data.write(dataset, features)
    encoder = folder / "bert_base_random"
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder_path(OFFLINE_ENCODER))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size)).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    return features, encoder


def training_setup(
    mode: str, features: str, encoder_dir: str, batches: int, bf16: bool, checkpointing="auto", kernels="auto"
) -> dict:
    """robustmm's TFR-Net in `mode` (finetune, frozen, faithful) ready to train on the first `batches` + 1
    batches of the benchmark data: the model, its optimizer and what train_epoch takes, and the seconds that
    preparing the splits (the frozen encoding) took."""
    import torch

    from robustmm import data
    from robustmm import train as training
    from robustmm.text_encoder import TextEncoder

    loaded, preset = training.load_features(features, "mosi")
    count = (batches + 1) * BATCH
    subset = {name: {key: value[:count] for key, value in loaded[name].items()} for name in data.SPLITS}
    config = training.RunConfig(
        dataset="mosi",
        rate=0.5,
        seed=1111,
        text_mode="frozen" if mode == "frozen" else "finetune",
        faithful=mode == "faithful",
        amp=bf16,
        checkpointing=checkpointing,
        kernels=kernels,
        device="cpu",
        progress=False,
        batch_size=BATCH,
    )
    encoder = TextEncoder(encoder_dir, load_weights=mode == "frozen")
    start = time.perf_counter()
    tensors = training.prepare_splits(subset, config, encoder, {})
    prepare_seconds = time.perf_counter() - start
    model = training.build_model(preset, config, MOSI_LENS, (encoder.hidden_size, *MOSI_DIMS[1:]), encoder)
    return {
        "model": model,
        "optimizer": training.build_optimizer(model, preset),
        "scaler": torch.amp.GradScaler("cpu", enabled=False),
        "preset": preset,
        "config": config,
        "generator": torch.Generator().manual_seed(0),
        "device": torch.device("cpu"),
        "tensors": tensors,
        "count": count,
        "prepare_seconds": prepare_seconds,
    }


def measure(mode: str, features: str, encoder_dir: str, batches: int, threads: int, bf16: bool) -> dict:
    """Runs in a fresh process: one mode, its throughput and this process's peak RSS."""
    import torch

    from robustmm import train as training

    torch.set_num_threads(threads)
    setup = training_setup(mode, features, encoder_dir, batches, bf16)
    model, optimizer, scaler, preset, config = (
        setup[key] for key in ("model", "optimizer", "scaler", "preset", "config")
    )
    generator, device, tensors, count = setup["generator"], setup["device"], setup["tensors"], setup["count"]
    prepare_seconds = setup["prepare_seconds"]
    take = lambda split, first, last: {key: value[first:last] for key, value in tensors[split].items()}  # noqa: E731

    # Epoch 2 so that the reconstruction loss is part of the step, as in every epoch after the first.
    training.train_epoch(model, optimizer, scaler, take("train", 0, BATCH), preset, config, 2, generator, device)
    start, cpu_start = time.perf_counter(), time.process_time()
    training.train_epoch(model, optimizer, scaler, take("train", BATCH, count), preset, config, 2, generator, device)
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    start = time.perf_counter()
    training.predict(model, take("test", 0, batches * BATCH), BATCH, device, bf16)
    eval_seconds = time.perf_counter() - start
    samples = batches * BATCH
    return {
        "mode": mode + (" bf16" if bf16 else ""),
        "train_samples_per_s": samples / train_seconds,
        "seconds_per_train_batch": train_seconds / batches,
        "cpu_seconds_per_train_batch": train_cpu_seconds / batches,
        "eval_samples_per_s": samples / eval_seconds,
        "peak_rss_gb": high_water_mark() / 1e9,
        "frozen_encoding_samples_per_s": 2 * 3 * count / prepare_seconds if mode == "frozen" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=3, help="timed training (and evaluation) batches per mode")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the reference used 2)")
    parser.add_argument("--modes", default="finetune,frozen,faithful")
    parser.add_argument("--bf16", action="store_true", help="also run every mode under bf16 autocast")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "FEATURES", "ENCODER"), help=argparse.SUPPRESS)
    parser.add_argument("--child-bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.batches, args.threads, args.child_bf16)))
        return

    import torch

    with tempfile.TemporaryDirectory() as folder:
        features, encoder = build_inputs(Path(folder))
        precisions = [False, True] if args.bf16 and torch.backends.mkldnn.is_available() else [False]
        print(
            f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}, {args.batches} timed batches, "
            f"bert-base-sized random encoder, MOSI shapes {MOSI_LENS}"
        )
        print(
            f"{'mode':<16}{'train samples/s':>16}{'s/batch':>10}{'CPU s/batch':>13}{'eval samples/s':>16}{'peak RSS GB':>13}"
        )
        for bf16 in precisions:
            for mode in args.modes.split(","):
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    str(features),
                    str(encoder),
                    "--batches",
                    str(args.batches),
                    "--threads",
                    str(args.threads),
                ]
                command += ["--child-bf16"] if bf16 else []
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{mode}: failed\n{done.stderr[-2000:]}")
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{row['mode']:<16}{row['train_samples_per_s']:>16.2f}{row['seconds_per_train_batch']:>10.2f}"
                    f"{row['cpu_seconds_per_train_batch']:>13.2f}"
                    f"{row['eval_samples_per_s']:>16.2f}{row['peak_rss_gb']:>13.2f}",
                    flush=True,
                )
                if row["frozen_encoding_samples_per_s"]:
                    print(
                        f"{'':<16}one-off frozen encoding (complete + corrupted ids): "
                        f"{row['frozen_encoding_samples_per_s']:.1f} samples/s"
                    )
        print("upstream reference: about 1.0 train samples/s (21-30 s/batch), peak RSS > 7 GB (jemalloc) / 16 GB")


if __name__ == "__main__":
    main()

"""Training speed and peak memory of robustmm's TFR-Net beside MMSA 2.2.1's TFR_NET, side by side on this machine.

The same MOSI-shaped synthetic data (lengths 50/375/500, audio 5 and vision 20 dims, missing rate 0.5) and
the same bert-base-sized random encoder (benchmarks/train_speed.py builds both) for every configuration:
MMSA's own TFR_NET (the test extra installs MMSA==2.2.1; nothing is installed here) trained as its
`do_train` trains (L1 + reconstruction loss, gradient clipping, Adam), and robustmm in finetune, frozen and
faithful mode (epoch >= 2, so the reconstruction loss is on). Batch 24.

Each configuration runs in its own process, one at a time (MMSA peaks near 11 GB), in `--rounds` rounds that
interleave the configurations, so that load from other jobs falls on all of them alike; a process does one
warm-up step, then `--steps` timed steps. Before each process starts, the machine must be idle (1-minute load
average below `--idle-load`), waited for up to `--wait` seconds. A step "had both cores" when its process
CPU time was at least 90% of threads x wall time; the median is over those steps when there are any.

    python benchmarks/vs_mmsa.py [--configs mmsa,finetune,frozen,faithful] [--rounds 2] [--steps 3]
                                 [--threads 2] [--checkpointing auto|true|false|text-encoder] [--kernels auto|pytorch]
                                 [--bf16] [--wait 300]

Run it under jemalloc, for both sides (docs/training.md, "Speed and memory"):
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benchmarks/vs_mmsa.py
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faithful_vs_mmsa import mmsa_args
from train_speed import BATCH, MOSI_DIMS, MOSI_LENS, build_inputs, high_water_mark, training_setup

CONFIGS = ("mmsa", "finetune", "frozen", "faithful")


def robustmm_steps(mode: str, features: str, encoder_dir: str, steps: int, checkpointing, kernels: str, bf16: bool):
    """Yields a training step function of robustmm in `mode` (finetune, frozen, faithful)."""
    from robustmm import train as training

    setup = training_setup(mode, features, encoder_dir, steps, bf16, checkpointing, kernels)
    model, tensors = setup["model"], setup["tensors"]
    train_arguments = (setup["optimizer"], setup["scaler"])
    epoch_arguments = (setup["preset"], setup["config"], 2, setup["generator"], setup["device"])

    def step(index: int) -> None:
        batch = {key: value[index * BATCH : (index + 1) * BATCH] for key, value in tensors["train"].items()}
        training.train_epoch(model, *train_arguments, batch, *epoch_arguments)

    return step, {"checkpointing": model.checkpointing}


def mmsa_steps(features: str, encoder_dir: str, steps: int):
    """A training step of MMSA 2.2.1's TFR_NET as its trainer takes one, on the same corrupted batches."""
    import importlib

    import torch
    from MMSA.models.subNets.BertTextEncoder import BertTextEncoder

    from robustmm import train as training
    from robustmm.text_encoder import TextEncoder

    loaded, preset = training.load_features(features, "mosi")
    p = preset.tfr_net
    count = (steps + 1) * BATCH
    split = {key: value[:count] for key, value in loaded["train"].items()}
    config = training.RunConfig(dataset="mosi", rate=0.5, seed=1111, device="cpu", progress=False, batch_size=BATCH)
    encoder = TextEncoder(encoder_dir, load_weights=False)
    corrupted = training.corrupt(
        split, config.rate, training.mask_seeds(config.missing_seeds, config.seed), encoder.unk_id
    )
    tensors = training.to_tensors(corrupted, "finetune")

    mmsa = importlib.import_module("MMSA.models.missingTask.TFR_NET.model")
    mmsa.BertTextEncoder = functools.partial(BertTextEncoder, pretrained=encoder_dir)
    # The preset's dropouts, as training uses them (faithful_vs_mmsa passes dropout-off params for equal outputs).
    args = mmsa_args(p, seq_lens=MOSI_LENS, feature_dims=(encoder.hidden_size, *MOSI_DIMS[1:]))
    model = mmsa.TFR_NET(args)
    model.train()
    # do_train's optimiser: BERT weights with decay, BERT biases and LayerNorms without, the rest.
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    bert = list(model.text_model.named_parameters())
    optimizer = torch.optim.Adam(
        [
            {
                "params": [w for n, w in bert if not any(k in n for k in no_decay)],
                "weight_decay": p.weight_decay_bert,
                "lr": p.learning_rate_bert,
            },
            {
                "params": [w for n, w in bert if any(k in n for k in no_decay)],
                "weight_decay": 0.0,
                "lr": p.learning_rate_bert,
            },
            {
                "params": [w for n, w in model.named_parameters() if "text_model" not in n],
                "weight_decay": p.weight_decay_other,
                "lr": p.learning_rate_other,
            },
        ]
    )

    def step(index: int) -> None:
        b = {key: value[index * BATCH : (index + 1) * BATCH] for key, value in tensors.items()}
        masks = [
            (torch.arange(length)[None] < b[f"{name}_lengths"][:, None]).long()
            for name, length in (("audio", MOSI_LENS[1]), ("vision", MOSI_LENS[2]))
        ]
        optimizer.zero_grad()
        prediction, gen_loss = model(
            (b["text_bert"].float(), b["text_bert_m"].float(), b["text_keep"].float()),
            (b["audio"], b["audio_m"], masks[0], b["audio_keep"].float()),
            (b["vision"], b["vision_m"], masks[1], b["vision_keep"].float()),
        )
        loss = torch.nn.functional.l1_loss(prediction, b["labels"].view(-1, 1)) + gen_loss
        loss.backward()
        torch.nn.utils.clip_grad_value_([w for w in model.parameters() if w.requires_grad], p.grad_clip)
        optimizer.step()

    return step, {}


def measure(
    config: str, features: str, encoder_dir: str, steps: int, threads: int, checkpointing, kernels: str, bf16: bool
) -> dict:
    """Runs in a fresh process: one warm-up step, then `steps` timed ones; wall and CPU seconds per step."""
    import torch

    torch.set_num_threads(threads)
    if config == "mmsa":
        step, facts = mmsa_steps(features, encoder_dir, steps)
    else:
        step, facts = robustmm_steps(config, features, encoder_dir, steps, checkpointing, kernels, bf16)
    step(0)
    walls, cpus = [], []
    for index in range(1, steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(index)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return {"walls": walls, "cpus": cpus, "peak_rss_gb": high_water_mark() / 1e9, **facts}


def wait_for_idle(idle_load: float, wait: float) -> float:
    """Waits until the 1-minute load average is below `idle_load` or `wait` seconds pass; returns the load."""
    deadline = time.monotonic() + wait
    while os.getloadavg()[0] >= idle_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def checkpointing_setting(text: str):
    return {"true": True, "false": False}.get(text, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="a subset of " + ",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (one process per configuration each)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process, after one warm-up step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--checkpointing", choices=("auto", "true", "false", "text-encoder"), default="auto", help="robustmm's setting"
    )
    parser.add_argument("--kernels", choices=("auto", "pytorch"), default="auto", help="robustmm's setting")
    parser.add_argument("--bf16", action="store_true", help="robustmm finetune and frozen under bf16 autocast")
    parser.add_argument("--idle-load", type=float, default=0.5, help="1-minute load average that counts as idle")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for an idle machine per process")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "FEATURES", "ENCODER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkpointing = checkpointing_setting(args.checkpointing)
    if args.child:
        config = args.child[0]
        bf16 = args.bf16 and config in ("finetune", "frozen")
        print(json.dumps(measure(*args.child, args.steps, args.threads, checkpointing, args.kernels, bf16)))
        return
    configs = args.configs.split(",")
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")

    allocator = os.environ.get("LD_PRELOAD", "") or "glibc malloc"
    print(
        f"commit {git_commit()}; {args.threads} threads, batch {BATCH}, MOSI shapes {MOSI_LENS}, rate 0.5, "
        f"bert-base-sized random encoder; {args.rounds} rounds x {args.steps} timed steps; allocator {allocator}; "
        f"robustmm checkpointing {args.checkpointing}, kernels {args.kernels}{', bf16' if args.bf16 else ''}",
        flush=True,
    )
    results = {config: {"walls": [], "cpus": [], "peak": 0.0, "loads": [], "facts": {}} for config in configs}
    with tempfile.TemporaryDirectory() as folder:
        features, encoder = build_inputs(Path(folder))
        for round_index in range(args.rounds):
            for config in configs:
                load = wait_for_idle(args.idle_load, args.wait)
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    config,
                    str(features),
                    str(encoder),
                    "--steps",
                    str(args.steps),
                    "--threads",
                    str(args.threads),
                    "--checkpointing",
                    args.checkpointing,
                    "--kernels",
                    args.kernels,
                ]
                command += ["--bf16"] if args.bf16 else []
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"round {round_index + 1} {config}: failed\n{done.stderr[-3000:]}", flush=True)
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                record = results[config]
                record["walls"] += row["walls"]
                record["cpus"] += row["cpus"]
                record["peak"] = max(record["peak"], row["peak_rss_gb"])
                record["loads"] += [load, os.getloadavg()[0]]
                record["facts"] = {key: row[key] for key in ("checkpointing",) if key in row}
                print(
                    f"round {round_index + 1} {config}: s/step "
                    + " ".join(f"{w:.2f}" for w in row["walls"])
                    + f"; load before/after {load:.2f}/{os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    report(results, args.threads)


def report(results: dict, threads: int) -> None:
    medians = {}
    print(
        f"\n{'configuration':<22}{'s/step median (min-max)':>26}{'samples/s':>11}{'vs MMSA':>9}{'peak RSS GB':>13}"
        f"{'steps w/ both cores':>21}{'load avg':>14}"
    )
    for config, record in results.items():
        if not record["walls"]:
            continue
        full = [w for w, c in zip(record["walls"], record["cpus"]) if c >= 0.9 * threads * w]
        chosen = full or record["walls"]
        medians[config] = statistics.median(chosen)
    reference = medians.get("mmsa")
    for config, record in results.items():
        if config not in medians:
            continue
        full = [w for w, c in zip(record["walls"], record["cpus"]) if c >= 0.9 * threads * w]
        chosen = full or record["walls"]
        name = "MMSA 2.2.1 TFR-Net" if config == "mmsa" else f"robustmm {config}"
        if record["facts"].get("checkpointing") is not None:
            checkpointing = record["facts"]["checkpointing"]
            name += {True: " (ckpt)", "text-encoder": " (ckpt text)"}.get(checkpointing, "")
        ratio = f"{reference / medians[config]:.2f}x" if reference else "-"
        spread = f"{medians[config]:.2f} ({min(chosen):.2f}-{max(chosen):.2f})"
        loads = f"{min(record['loads']):.2f}-{max(record['loads']):.2f}"
        print(
            f"{name:<22}{spread:>26}{BATCH / medians[config]:>11.2f}{ratio:>9}{record['peak']:>13.2f}"
            f"{len(full):>14}/{len(record['walls']):<6}{loads:>14}"
        )


if __name__ == "__main__":
    main()

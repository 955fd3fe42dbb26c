"""Scaling figures: extraction of the demo clips and a small sweep, executor local vs ray at 1 and 2 workers;
Ray's own overhead per clip task; projected times for a MOSEI-size extraction and the 165-run protocol.

    python benchmarks/scale.py [--clips 100] [--runs 4] [--epochs 2] [--workers 8 32 128]

Needs the `ray` extra (pip install 'robustmm[ray]'). Each Ray measurement starts its own local instance with as
many CPUs as workers (no dashboard, a 200 MB object store). The projections assume the measured per-task cost
scales with the clip's duration (MOSEI: 23,453 clips, about 65 hours) and with the workers (perfect packing),
plus the measured per-task overhead.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robustmm import data as feature_data  # noqa: E402
from robustmm.executors import ray_extract  # noqa: E402
from robustmm.experiments import sweep  # noqa: E402
from robustmm.features.base import create_extractor  # noqa: E402
from robustmm.features.cache import file_hash  # noqa: E402
from robustmm.features.dataset import read_dataset  # noqa: E402
from robustmm.features.extract import extract  # noqa: E402
from robustmm.presets import get_preset  # noqa: E402
from robustmm.settings import load_params  # noqa: E402
from robustmm.synthetic import make_dataset  # noqa: E402
from robustmm.text_encoder import OFFLINE_ENCODER  # noqa: E402

DEMO_CLIP_SECONDS = 4.0
MOSEI_CLIPS, MOSEI_HOURS = 23_453, 65.0
PROTOCOL_RUNS = 165  # 11 rates x 3 seeds x 5 datasets


def start_ray(cpus: int) -> None:
    ray.init(num_cpus=cpus, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)


def subset(dataset: Path, clips: int, folder: Path) -> Path:
    """The first `clips` clips of `dataset` (label.csv cut, clips linked)."""
    lines = (dataset / "label.csv").read_text().splitlines()
    kept = [clip.id for clip in read_dataset(dataset)][:clips]
    header, rows = lines[0], lines[1:]
    keep = [row for row in rows if "$_$".join(row.split(",")[:2]) in kept]
    folder.mkdir(parents=True)
    (folder / "label.csv").write_text("\n".join([header, *keep]) + "\n")
    for row in keep:
        video, clip = row.split(",")[:2]
        source = next((dataset / "Raw" / video).glob(f"{clip}.*"))
        target = folder / "Raw" / video / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    return folder


def time_extraction(dataset: Path, settings: dict, executor: str, workers: int, scratch: Path) -> float:
    cache = scratch / f"cache-{executor}-{workers}"
    outputs = {modality: scratch / f"{executor}-{workers}" / f"{modality}.pkl" for modality in settings}
    if executor == "ray":
        start_ray(workers)
    try:
        start = time.perf_counter()
        extract(
            dataset, settings, outputs, cache, workers=workers, max_failure_share=1.0, progress=False, executor=executor
        )
        return time.perf_counter() - start
    finally:
        if executor == "ray":
            ray.shutdown()
        shutil.rmtree(cache, ignore_errors=True)


def ray_overhead(dataset: Path, settings: dict) -> tuple[float, float]:
    """Mean seconds per clip inside one actor, and mean Ray round trip minus that (submit, transfer, result)."""
    extractors = [create_extractor(name, config, modality) for modality, (name, config) in settings.items()]
    start_ray(1)
    try:
        actor = ray.remote(num_cpus=1)(ray_extract.ExtractionActor).remote([(type(e), e.config) for e in extractors])
        ray.get(actor.pid.remote())
        inside, overhead = [], []
        for clip in read_dataset(dataset):
            start = time.perf_counter()
            _, seconds = ray.get(actor.extract.remote(str(clip.path), list(range(len(extractors)))))
            overhead.append(time.perf_counter() - start - seconds)
            inside.append(seconds)
    finally:
        ray.shutdown()
    return statistics.mean(inside), statistics.mean(overhead)


def time_sweep(data: Path, runs: int, epochs: int, executor: str, workers: int, scratch: Path) -> float:
    rates = [round(index / runs, 3) for index in range(runs)]
    out = scratch / f"sweep-{executor}-{workers}"
    options = {"executor": executor, "workers": workers if executor == "local" else 1}
    if executor == "ray":
        start_ray(workers)
    try:
        start = time.perf_counter()
        sweep(
            data,
            "sims",
            rates=rates,
            seeds=[1111],
            out=out,
            text_mode="frozen",
            text_encoder=OFFLINE_ENCODER,
            device="cpu",
            epochs=epochs,
            progress=False,
            torch_threads=1,
            **options,
        )
        return time.perf_counter() - start
    finally:
        if executor == "ray":
            ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(REPO / "raw" / "demo"))
    parser.add_argument("--clips", type=int, default=100, help="demo clips to extract (default all 100)")
    parser.add_argument("--runs", type=int, default=4, help="runs of the small sweep (rates x 1 seed)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 128], help="workers to project for")
    parser.add_argument(
        "--protocol-run-hours",
        type=float,
        default=10.0,
        help="hours of one protocol run for the 165-run projection (default 10: MOSI finetune, "
        "~20 min an epoch on a CPU, 30 epochs)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params(REPO / "params.yaml")
    settings = {
        modality: (chosen.extractor, chosen.options)
        for modality, chosen in (("audio", params.extract.audio), ("vision", params.extract.vision))
    }

    with tempfile.TemporaryDirectory(prefix="robustmm-scale-") as scratch_name:
        scratch = Path(scratch_name)
        dataset = subset(Path(args.dataset), args.clips, scratch / "clips")
        clips = len(read_dataset(dataset))
        _ = [file_hash(clip.path) for clip in read_dataset(dataset)]  # the page cache warm for every measurement
        print(
            f"extraction of {clips} demo clips (audio {settings['audio'][0]} + vision {settings['vision'][0]}), fresh cache:"
        )
        rates = {}
        for executor in ("local", "ray"):
            for workers in (1, 2):
                seconds = time_extraction(dataset, settings, executor, workers, scratch)
                rates[(executor, workers)] = clips / seconds
                print(f"  {executor:5} {workers} worker(s): {seconds:6.1f} s, {clips / seconds:5.2f} clips/s")
        inside, overhead = ray_overhead(dataset, settings)
        print(
            f"Ray overhead per clip task: {overhead * 1000:.1f} ms on {inside:.3f} s of extraction "
            f"({overhead / inside:.2%} of a clip's extraction time; target < 5%)"
        )

        data = scratch / "sweep.pkl"
        feature_data.write(
            make_dataset(
                get_preset("sims"), sizes=(64, 16, 16), seq_lens=(16, 40, 20), feature_dims=(384, 33, 709), seed=0
            ),
            data,
        )
        print(
            f"sweep of {args.runs} runs ({args.epochs} epochs each, SIMS-shaped synthetic data 64/16/16, 1 thread a run):"
        )
        sweep_seconds = {}
        for executor in ("local", "ray"):
            for workers in (1, 2):
                seconds = time_sweep(data, args.runs, args.epochs, executor, workers, scratch)
                sweep_seconds[(executor, workers)] = seconds
                print(f"  {executor:5} {workers} worker(s): {seconds:6.1f} s, {args.runs / seconds * 60:5.2f} runs/min")

    measured_run = sweep_seconds[("ray", 1)] / args.runs
    per_clip = (inside + overhead) / DEMO_CLIP_SECONDS * (MOSEI_HOURS * 3600 / MOSEI_CLIPS)
    print(
        f"projections (a MOSEI clip lasts {MOSEI_HOURS * 3600 / MOSEI_CLIPS:.1f} s on average; "
        f"{per_clip:.2f} s of one core per clip at the measured rate):"
    )
    for workers in args.workers:
        extraction = MOSEI_CLIPS * per_clip / workers
        protocol = -(-PROTOCOL_RUNS // workers) * args.protocol_run_hours * 3600
        measured = -(-PROTOCOL_RUNS // workers) * measured_run
        print(
            f"  {workers:4} workers: MOSEI extraction {hours(extraction)}; 165-run protocol {hours(protocol)} "
            f"at {args.protocol_run_hours:g} h a run, {measured / 60:.1f} min at the measured {measured_run:.1f} s a run"
        )


if __name__ == "__main__":
    main()

"""Extraction speed on real clips: real-time factor (seconds of video per wall second) and clips/s per extractor
and for the whole set, with 1 and 2 workers, next to the bound set by decoding plus face landmarking alone.

    PYTHONPATH=. python benchmarks/extract_speed.py [--media ../shared/media] [--fps 10] [--workers 1 2] [--repeat 1] [--rounds 3]

Each run starts from an empty cache; runs include worker start-up and model loading (seconds per worker),
the bound does not. `cpu s` is the CPU time spent (all processes; for the bound only inside the timed jobs):
on a shared machine wall times swing with other people's load, CPU times much less. `--repeat K` lists every clip K times as separate clips (each is extracted: the cache is
looked up before the run), so start-up weighs less. The bound and the whole set run in `--rounds` interleaved
rounds (the single extractors in the first only); the closing table gives their medians and the ratio of the
whole set's throughput to the bound's (the target: at least 0.8 with every worker count).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_dataset import arrange_media_dataset  # noqa: E402

from robustmm.features.base import create_extractor  # noqa: E402
from robustmm.features.dataset import read_dataset  # noqa: E402
from robustmm.features.decode import decode_clip  # noqa: E402
from robustmm.features.extract import extract  # noqa: E402

_landmarker = None


def _load_landmarker(fps: float) -> None:
    global _landmarker
    _landmarker = create_extractor("mediapipe", {"fps": fps})
    _landmarker.load()


def _decode_and_landmark(path: str) -> float:
    """CPU seconds of decoding `path` and landmarking its sampled frames."""
    start = time.process_time()
    decode_clip(path, video_fps=(_landmarker.frame_rate,), on_frame=lambda fps, t, rgb: _landmarker.frame_features(rgb))
    return time.process_time() - start


def _cpu_seconds() -> float:
    """CPU time of this process and of its child processes that have ended (a pool's workers end when it closes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _state() -> str:
    """The load average and the commit measured: figures taken beside other work mean little."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent
    ).stdout.strip()
    return f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}, commit {commit or 'unknown'}"


def landmarking_bound(paths: list[str], fps: float, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of decoding + FaceLandmarker on every sampled frame, models already loaded."""
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_load_landmarker, initargs=(fps,)
    ) as pool:
        list(pool.map(time.sleep, [0.5] * workers))  # start and initialise every worker before the clock runs
        start = time.perf_counter()
        cpu = sum(pool.map(_decode_and_landmark, paths))
        return time.perf_counter() - start, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = Path(__file__).resolve().parents[1]
    default_media = next(
        (p for p in (repo.parent / "shared" / "media", repo.parent.parent / "shared" / "media") if p.is_dir()), None
    )
    parser.add_argument("--media", default=default_media, help="the shared media folder (default ../shared/media)")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="list every clip this many times")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the bound and the whole set")
    args = parser.parse_args()
    if args.media is None:
        parser.error("no ../shared/media folder found: pass --media")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="robustmm-bench-"))
    count = arrange_media_dataset(Path(args.media), work / "dataset", args.repeat)
    clips = read_dataset(work / "dataset")
    seconds = 0.0
    for clip in clips:
        with av.open(str(clip.path)) as container:
            seconds += container.duration / av.time_base
    print(f"{count} clips, {seconds:.1f} s of video, vision at {args.fps:g} fps, {os.cpu_count()} CPUs, {_state()}")

    runs = {
        "bert (text)": {"text": ("bert", {})},
        "librosa (audio)": {"audio": ("librosa", {})},
        "opensmile (audio)": {"audio": ("opensmile", {})},
        "mfcc (audio)": {"audio": ("mfcc", {})},
        "mediapipe (vision)": {"vision": ("mediapipe", {"fps": args.fps})},
        "whole set bert+librosa+mediapipe": {
            "text": ("bert", {}),
            "audio": ("librosa", {}),
            "vision": ("mediapipe", {"fps": args.fps}),
        },
    }
    # Import and warm everything once so the first timed run does not pay the imports alone.
    arrange_media_dataset(Path(args.media), work / "warm-dataset")
    extract(
        work / "warm-dataset",
        runs["whole set bert+librosa+mediapipe"],
        {m: work / "warm" / f"{m}.pkl" for m in ("text", "audio", "vision")},
        work / "warm-cache",
        workers=1,
        max_failure_share=1.0,
        progress=False,
    )
    print(f"{'run':<36} {'workers':>7} {'wall s':>8} {'RTF':>7} {'clips/s':>8} {'cpu s':>7}")

    def timed(name: str, workers: int, settings: dict, round_: int) -> float:
        folder = work / f"{name.split()[0]}-{workers}-{round_}"
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        extract(
            work / "dataset",
            settings,
            {m: folder / f"{m}.pkl" for m in settings},
            folder / "cache",
            workers=workers,
            max_failure_share=1.0,
            progress=False,
        )
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        print(
            f"{name:<36} {workers:>7} {wall:>8.2f} {seconds / wall:>7.2f} {count / wall:>8.2f} {cpu:>7.2f}", flush=True
        )
        return wall

    whole = "whole set bert+librosa+mediapipe"
    walls = {(kind, workers): [] for kind in ("bound", "whole") for workers in args.workers}
    # Rounds interleave the bound and the whole set per worker count, so that both see the same load; the
    # single extractors run in the first round only.
    for round_ in range(args.rounds):
        for workers in args.workers:
            bound, cpu = landmarking_bound([str(clip.path) for clip in clips], args.fps, workers)
            walls[("bound", workers)].append(bound)
            print(
                f"{'bound: decode + landmarking':<36} {workers:>7} {bound:>8.2f} {seconds / bound:>7.2f} {count / bound:>8.2f} {cpu:>7.2f}",
                flush=True,
            )
            for name, settings in runs.items():
                if name == whole:
                    walls[("whole", workers)].append(timed(name, workers, settings, round_))
                elif round_ == 0 and not (name.startswith("bert") and workers > 1):  # text has no workers
                    timed(name, workers, settings, round_)
    print(
        f"\nmedians over {args.rounds} interleaved rounds; ratio: whole-set throughput / bound throughput; {_state()}"
    )
    print(f"{'workers':>7} {'bound s':>8} {'whole s':>8} {'ratio':>6} {'median of round ratios':>23}")
    for workers in args.workers:
        bounds, wholes = walls[("bound", workers)], walls[("whole", workers)]
        ratios = [bound / wall for bound, wall in zip(bounds, wholes)]
        print(
            f"{workers:>7} {statistics.median(bounds):>8.2f} {statistics.median(wholes):>8.2f} "
            f"{statistics.median(bounds) / statistics.median(wholes):>6.2f} {statistics.median(ratios):>23.2f}"
        )


if __name__ == "__main__":
    main()

"""Extraction of one or more modalities of a dataset: cached per clip, in a process pool, failures reported.

Each modality is written to its own features file (read by `assemble`) and a JSON report beside it:
`<output>` and `<output stem>.report.json`.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from robustmm import data
from robustmm.features.base import AudioExtractor, Extractor, FileExtractor, FrameExtractor, create_extractor
from robustmm.features.cache import ClipResult, FeatureCache, file_hash, text_hash
from robustmm.features.dataset import Clip, read_dataset
from robustmm.features.decode import ClipError, decode_clip
from robustmm.features.text import BertExtractor

FEATURES_KIND = "robustmm-modality-features"
DEFAULT_MAX_FAILURE_SHARE = 0.1


@dataclass(frozen=True)
class _Job:
    clip_id: str
    path: str
    entries: tuple[tuple[int, str], ...]  # (extractor index, cache entry path) still to compute


def _failure(extractor: Extractor, reason: str, quality: dict | None = None) -> ClipResult:
    return ClipResult(arrays={"features": np.zeros((0, extractor.dim), np.float32)}, failure=reason, quality=quality or {})


def extract_clip(path: Path, extractors: Mapping[int, Extractor]) -> dict[int, tuple[ClipResult, bool]]:
    """Decode `path` once and run every extractor on it: {index: (result, cacheable)}."""
    audio = {i: e for i, e in extractors.items() if isinstance(e, AudioExtractor)}
    frame = {i: e for i, e in extractors.items() if isinstance(e, FrameExtractor)}
    results: dict[int, tuple[ClipResult, bool]] = {}
    if audio or frame:
        rows: dict[int, list[np.ndarray]] = {i: [] for i in frame}
        sampled = dict.fromkeys(frame, 0)

        def on_frame(fps: float, time: float, rgb: np.ndarray) -> None:
            for i, extractor in frame.items():
                if extractor.frame_rate == fps:
                    sampled[i] += 1
                    if (features := extractor.frame_features(rgb)) is not None:
                        rows[i].append(features)

        try:
            decoded = decode_clip(path, {e.audio_format for e in audio.values()}, {e.frame_rate for e in frame.values()}, on_frame)
        except ClipError as error:
            for i, extractor in {**audio, **frame}.items():
                results[i] = (_failure(extractor, str(error)), error.cache)
        else:
            for i, extractor in audio.items():
                if decoded.audio is None:
                    results[i] = (_failure(extractor, "no audio stream"), True)
                    continue
                samples = decoded.audio[extractor.audio_format]
                try:
                    features = extractor.extract(samples)
                    results[i] = (ClipResult({"features": features}, quality={"seconds": round(len(samples) / extractor.sample_rate, 3)}), True)
                except ClipError as error:
                    results[i] = (_failure(extractor, str(error)), error.cache)
            for i, extractor in frame.items():
                quality = {"frames": sampled[i], "detected": len(rows[i])}
                if not decoded.has_video:
                    results[i] = (_failure(extractor, "no video stream", quality), True)
                elif not sampled[i]:
                    results[i] = (_failure(extractor, "no video frames decoded", quality), True)
                elif not rows[i]:
                    results[i] = (_failure(extractor, f"no face in any of {sampled[i]} sampled frames", quality), True)
                else:
                    results[i] = (ClipResult({"features": np.stack(rows[i])}, quality=quality), True)
    for i, extractor in extractors.items():
        if isinstance(extractor, FileExtractor):
            try:
                features, quality = extractor.extract_file(path)
            except ClipError as error:
                results[i] = (_failure(extractor, str(error)), error.cache)
                continue
            reason = None if len(features) else f"no face in any of {quality.get('frames', 0)} frames"
            results[i] = (ClipResult({"features": features}, failure=reason, quality=quality), True)
    return results


def _run_job(job: _Job, extractors: list[Extractor]) -> tuple[str, dict[int, ClipResult]]:
    """Extract one clip, store cacheable results; return the results that could not be cached."""
    entries = dict(job.entries)
    try:
        results = extract_clip(Path(job.path), {i: extractors[i] for i in entries})
    except Exception as error:
        raise RuntimeError(f"{job.path}: {type(error).__name__}: {error}") from error
    uncached = {}
    for i, (result, cacheable) in results.items():
        if cacheable:
            FeatureCache.store(Path(entries[i]), result)
        else:
            uncached[i] = result
    return job.clip_id, uncached


_worker_extractors: list[Extractor] = []


def _init_worker(specs: list[tuple[str, dict]]) -> None:
    threadpool_limits(limits=1, user_api="blas")  # one core per worker, as in the serial run (see _run_jobs)
    _worker_extractors.extend(create_extractor(name, config) for name, config in specs)
    for extractor in _worker_extractors:
        extractor.load()


def _worker_job(job: _Job) -> tuple[str, dict[int, ClipResult]]:
    return _run_job(job, _worker_extractors)


def _run_jobs(jobs: list[_Job], extractors: list[Extractor], workers: int, progress: bool,
              meanwhile: Callable[[], None]) -> dict[tuple[int, str], ClipResult]:
    """Extract the media jobs; `meanwhile` (the text encoding) runs in this process while workers extract."""
    uncached: dict[tuple[int, str], ClipResult] = {}
    bar = tqdm(total=len(jobs), unit="clip", desc="extract", disable=not progress or not jobs, smoothing=0.1)
    if workers <= 1 or len(jobs) <= 1:
        # A worker is one core: BLAS threads beside it only oversubscribe the cores (librosa's mel products ran
        # 20 to 30 times slower with two BLAS threads on two busy cores). One thread everywhere also keeps the
        # floats independent of the worker count (MFCC last bits differed between threaded and single-threaded BLAS).
        with bar, threadpool_limits(limits=1, user_api="blas"):
            for extractor in extractors:
                extractor.load()
            try:
                for job in jobs:
                    clip_id, results = _run_job(job, extractors)
                    uncached.update({(i, clip_id): result for i, result in results.items()})
                    bar.update(1)
            finally:
                for extractor in extractors:
                    extractor.close()
        meanwhile()
        return uncached
    specs = [(extractor.name, dataclasses.asdict(extractor.config)) for extractor in extractors]
    context = multiprocessing.get_context("spawn")  # no forked copies of model threads or locks
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_init_worker, initargs=(specs,))
    try:
        futures = [pool.submit(_worker_job, job) for job in jobs]
        meanwhile()
        with bar:
            for future in as_completed(futures):
                clip_id, results = future.result()
                uncached.update({(i, clip_id): result for i, result in results.items()})
                bar.update(1)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # stop at the first error; finished clips stay cached
        raise
    pool.shutdown()
    return uncached


def _extract_text(clips: list[Clip], extractor: BertExtractor, cache: FeatureCache, progress: bool) -> None:
    """Encode the transcripts not yet cached. Batches are fixed slices of the sorted clip list, so a resumed run
    computes every clip in the same batch as an uninterrupted run would (identical floats)."""
    entries = [cache.entry(text_hash(clip.text), extractor) for clip in clips]
    size = extractor.config.batch_size
    starts = [start for start in range(0, len(clips), size) if any(not path.is_file() for path in entries[start:start + size])]
    if not starts:
        return
    extractor.load()
    for start in tqdm(starts, unit="batch", desc="text", disable=not progress):
        batch = slice(start, start + size)
        text_bert, text = extractor.extract_batch([clip.text for clip in clips[batch]])
        for path, ids, hidden in zip(entries[batch], text_bert, text):
            if not path.is_file():
                FeatureCache.store(path, ClipResult({"text_bert": ids, "text": hidden}))


def _report_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.report.json")


def _modality_output(modality: str, extractor: Extractor, clips: list[Clip], results: list[ClipResult]) -> tuple[dict, dict]:
    ids = [clip.id for clip in clips]
    failures = [{"id": clip.id, "modality": modality, "reason": result.failure}
                for clip, result in zip(clips, results) if result.failure is not None]
    quality = {clip.id: result.quality for clip, result in zip(clips, results) if result.quality}
    features = {"kind": FEATURES_KIND, "modality": modality, "extractor": extractor.describe(), "ids": ids,
                "failures": failures, "quality": quality}
    if modality == "text":
        features["text_bert"] = np.stack([result.arrays["text_bert"] for result in results]).astype(np.int64)
        features["text"] = np.stack([result.arrays["text"] for result in results]).astype(np.float32)
    else:
        features["features"] = [result.arrays["features"].astype(np.float32) for result in results]
    report = {"modality": modality, "extractor": extractor.name, "clips": len(clips), "failed": len(failures),
              "failures": failures, "quality": quality}
    if modality == "vision":
        frames = sum(q.get("frames", 0) for q in quality.values())
        detected = sum(q.get("detected", 0) for q in quality.values())
        report["face_detected_share"] = round(detected / frames, 4) if frames else None
        report["face_detected_share_per_clip"] = {
            clip_id: round(q["detected"] / q["frames"], 4) if q.get("frames") else 0.0 for clip_id, q in quality.items()
        }
    return features, report


def _failure_problem(modality: str, extractor: Extractor, report: dict, max_share: float, report_path: Path) -> str | None:
    share = report["failed"] / report["clips"] if report["clips"] else 0.0
    if share <= max_share:
        return None
    reasons = Counter(failure["reason"] for failure in report["failures"]).most_common(3)
    listing = "; ".join(f"{count} x {reason}" for reason, count in reasons)
    examples = ", ".join(failure["id"] for failure in report["failures"][:5])
    return (f"{modality} ({extractor.name}): {report['failed']} of {report['clips']} clips failed ({share:.1%}, "
            f"more than max_failure_share {max_share:.1%}): {listing}; e.g. {examples}; see {report_path}")


def extract(
    dataset_dir: str | os.PathLike,
    extractors: Mapping[str, tuple[str, dict | None]],
    outputs: Mapping[str, str | os.PathLike],
    cache_dir: str | os.PathLike,
    workers: int | None = None,
    max_failure_share: float = DEFAULT_MAX_FAILURE_SHARE,
    progress: bool = True,
) -> dict[str, dict]:
    """Extract the modalities in `extractors` ({modality: (extractor name, config dict)}) of every clip.

    Each clip is decoded once for all its audio and vision extractors. Writes `outputs[modality]` and its
    report; returns {modality: report}. Raises RuntimeError (after writing every report) when a modality
    has more than `max_failure_share` failed clips; those modalities' features files are not written.
    """
    if set(extractors) != set(outputs):
        raise ValueError(f"extractors for {sorted(extractors)} but outputs for {sorted(outputs)}")
    if not 0.0 <= max_failure_share <= 1.0:
        raise ValueError(f"max_failure_share must be within [0, 1], got {max_failure_share}")
    clips = read_dataset(dataset_dir)
    built = {modality: create_extractor(name, config, modality) for modality, (name, config) in extractors.items()}
    for extractor in built.values():
        _ = extractor.feature_names  # a bad config (e.g. an unknown feature set) fails here, before any work
    cache = FeatureCache(cache_dir)
    workers = (os.cpu_count() or 1) if workers is None else workers

    media = [(modality, extractor) for modality, extractor in built.items() if modality != "text"]
    media_extractors = [extractor for _, extractor in media]
    for extractor in media_extractors:
        extractor.check()
    hashes = {clip.id: file_hash(clip.path) for clip in clips} if media else {}
    jobs = []
    for clip in clips:
        entries = tuple((i, str(path)) for i, extractor in enumerate(media_extractors)
                        if not (path := cache.entry(hashes[clip.id], extractor)).is_file())
        if entries:
            jobs.append(_Job(clip.id, str(clip.path), entries))
    def extract_text() -> None:
        if "text" in built:
            _extract_text(clips, built["text"], cache, progress)

    if jobs:
        uncached = _run_jobs(jobs, media_extractors, workers, progress, meanwhile=extract_text)
    else:
        uncached = {}
        extract_text()

    reports, problems = {}, []
    for modality, extractor in built.items():
        index = media_extractors.index(extractor) if modality != "text" else None
        results = []
        for clip in clips:
            content = text_hash(clip.text) if modality == "text" else hashes[clip.id]
            result = uncached.get((index, clip.id)) or FeatureCache.load(cache.entry(content, extractor))
            results.append(result)
        features, report = _modality_output(modality, extractor, clips, results)
        output = Path(outputs[modality])
        output.parent.mkdir(parents=True, exist_ok=True)
        _report_path(output).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        problem = _failure_problem(modality, extractor, report, max_failure_share, _report_path(output))
        if problem:
            problems.append(problem)
        else:
            data.write(features, output)
        reports[modality] = report
    if problems:
        raise RuntimeError("extraction failed past the allowed share:\n  " + "\n  ".join(problems))
    return reports


def extract_modality(
    dataset_dir: str | os.PathLike,
    modality: str,
    extractor_name: str,
    config: dict | None = None,
    cache_dir: str | os.PathLike = "cache/features",
    workers: int | None = None,
    output: str | os.PathLike | None = None,
    max_failure_share: float = DEFAULT_MAX_FAILURE_SHARE,
    progress: bool = True,
) -> dict:
    """One modality's features file (default `features/<modality>.pkl`); returns its report."""
    output = output if output is not None else Path("features") / f"{modality}.pkl"
    return extract(dataset_dir, {modality: (extractor_name, config)}, {modality: output}, cache_dir, workers,
                   max_failure_share, progress)[modality]


def read_features(path: str | os.PathLike) -> dict:
    """A features file written by extract (restricted unpickling; checks what it is)."""
    loaded = data.read_pkl(path)
    if loaded.get("kind") != FEATURES_KIND:
        raise data.FormatError(path, ["not a robustmm modality features file (written by `robustmm extract`)"])
    return loaded

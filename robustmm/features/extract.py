"""Extraction of one or more modalities of a dataset: cached per clip, in a process pool, failures reported.

Each modality is written to its own features file (read by `assemble`) and a JSON report beside it:
`<output>` and `<output stem>.report.json`.
"""

from __future__ import annotations

import ctypes
import functools
import json
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from robustmm import data
from robustmm.features.base import AudioExtractor, Extractor, FileExtractor, FrameExtractor, create_extractor
from robustmm.features.cache import (ClipResult, DamagedEntry, FeatureCache, file_hash, jit_cache_lock, jit_cache_marker,
                                     librosa_caches_privately, text_hash, use_private_jit_cache)
from robustmm.features.dataset import Clip, read_dataset
from robustmm.features.decode import ClipError, decode_clip
from robustmm.features.text import BertExtractor

if TYPE_CHECKING:
    from robustmm.executors import Shard

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


def _warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)


def _load_extractors(extractors: list[Extractor]) -> None:
    """Load every extractor: those without numba kernels first, beside the other workers (MediaPipe's import
    alone takes seconds), then those with (_load_compiled)."""
    _load_uncompiled(extractors)
    _load_compiled(extractors)


def _load_uncompiled(extractors: list[Extractor]) -> None:
    for extractor in extractors:
        if not extractor.uses_jit_cache:
            extractor.load()


def _load_compiled(extractors: list[Extractor], wait: bool = True) -> bool:
    """Load the extractors using numba's disk cache: one process at a time (jit_cache_lock) until one process has
    loaded them into it (jit_cache_marker), then side by side. Returns whether they are loaded: with
    `wait=False`, not while another process holds the lock (it is compiling them: 25 s for librosa's)."""
    compiled = [extractor for extractor in extractors if extractor.uses_jit_cache]
    if not compiled:
        return True
    marker = jit_cache_marker(compiled)
    if marker.is_file():
        for extractor in compiled:
            extractor.load()
        return True
    with jit_cache_lock(wait) as held:
        if not held:
            return False
        for extractor in compiled:
            extractor.load()
        if librosa_caches_privately():
            marker.touch()
    return True


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its stage: after kill -9 of the stage, orphans kept their models (~670 MB each)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def exit_when_orphaned() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=exit_when_orphaned, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _loading(load: Callable[[], bool | None]) -> bool | None:
    try:
        return load()
    except Exception as error:
        raise RuntimeError(f"loading the extractors failed: {type(error).__name__}: {error}") from error


def _worker_main(connection: Connection, specs: list[tuple[type[Extractor], object]], parent_pid: int) -> None:
    """One worker process: load the extractors, then extract the jobs the parent sends until it sends None. It
    says ("ready", complete) when it can take jobs, complete once every extractor is loaded."""
    _die_with_parent(parent_pid)
    threadpool_limits(limits=1, user_api="blas")  # one core per worker (see extract_in_this_process)
    extractors = [cls(config) for cls, config in specs]
    try:
        _loading(lambda: _load_uncompiled(extractors))
        complete = _loading(lambda: _load_compiled(extractors, wait=False))
        connection.send(("ready", complete))
        while True:
            if not complete:
                # Another worker is compiling the numba kernels into the cache (a fresh machine's first run): this
                # one extracts what needs none of them (the parent sends only that), and loads them from the
                # cache once the other lets go of its lock, trying between jobs and while idle.
                if complete := _loading(lambda: _load_compiled(extractors, wait=False)):
                    connection.send(("ready", True))
                elif not connection.poll(0.25):
                    continue
            if (job := connection.recv()) is None:
                break
            connection.send(("done", _run_job(job, extractors)))
    except EOFError:  # the parent has gone
        pass
    except RuntimeError as error:  # _run_job names the clip
        connection.send(("error", str(error)))
    finally:
        for extractor in extractors:
            extractor.close()


WORKER_ATTEMPTS = 2


def retry_or_report(job: _Job, cause: str, extractors: list[Extractor], pending: deque, attempts: Counter,
                    uncached: dict, on_done: Callable[[], None]) -> None:
    """The clip of a worker that died: back to the queue for one more attempt, then reported failed with `cause`."""
    attempts[job.clip_id] += 1
    if attempts[job.clip_id] < WORKER_ATTEMPTS:
        _warn(f"{job.path}: the worker process extracting it died ({cause}); retrying it in a fresh worker")
        pending.appendleft(job)
        return
    reason = f"the worker process died extracting this clip ({cause}), also when retried in a fresh worker"
    _warn(f"{job.path}: {reason}; reported as failed (not cached, a rerun tries again)")
    uncached.update({(i, job.clip_id): _failure(extractors[i], reason) for i, _ in job.entries})
    on_done()


def _death_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    job: _Job | None = None
    ready: bool = False
    complete: bool = False  # every extractor loaded (else only those without numba kernels)


class _WorkerPool:
    """Worker processes that extract one clip at a time. A worker that dies (segfault, OOM kill, os._exit) costs
    only its clip: the clip is retried once in a fresh worker, then reported failed with the cause, and the other
    clips go on (ProcessPoolExecutor lost every clip with the pool)."""

    MAX_FAILED_STARTS = 3  # workers dying in a row while loading the extractors: not a problem of a clip

    def __init__(self, extractors: list[Extractor], workers: int):
        self.extractors = extractors
        self.size = workers
        self.specs = [(type(extractor), extractor.config) for extractor in extractors]
        self.context = multiprocessing.get_context("spawn")  # no forked copies of model threads or locks
        self.workers: list[_Worker] = []
        self.failed_starts = 0

    def _start(self) -> None:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(target=_worker_main, args=(child_end, self.specs, os.getpid()), daemon=True,
                                       name="robustmm-extract")
        process.start()
        child_end.close()
        self.workers.append(_Worker(process, parent_end))

    def run(self, jobs: list[_Job], on_done: Callable[[], None]) -> dict[tuple[int, str], ClipResult]:
        pending, attempts, uncached = deque(jobs), Counter(), {}
        self.parts_left = Counter()  # clip id -> its jobs still to finish beyond one (a clip split in _dispatch)
        try:
            while pending or any(worker.job for worker in self.workers):
                self._dispatch(pending)
                busy = sum(worker.job is not None for worker in self.workers)
                while len(self.workers) < min(self.size, len(pending) + busy):
                    self._start()
                waitables = [worker.connection for worker in self.workers] + [worker.process.sentinel for worker in self.workers]
                ready = wait(waitables)
                for worker in list(self.workers):
                    if worker.connection not in ready and worker.process.sentinel not in ready:
                        continue
                    try:
                        kind, payload = worker.connection.recv() if worker.connection.poll() else (None, None)
                    except (EOFError, OSError):
                        kind = None
                    if kind is None:
                        if worker.process.sentinel in ready or not worker.process.is_alive():
                            self._on_death(worker, pending, attempts, uncached, on_done)
                        continue
                    if kind == "error":
                        raise RuntimeError(payload)
                    if kind == "ready":  # may come while a job is on its way to the worker
                        worker.ready, worker.complete, self.failed_starts = True, payload, 0
                    elif kind == "done":
                        clip_id, results = payload
                        uncached.update({(i, clip_id): result for i, result in results.items()})
                        self._finished(clip_id, on_done)
                        worker.job = None
        finally:
            self._stop()
        return uncached

    def _dispatch(self, pending: deque) -> None:
        """Give each idle worker the next job it can do (a job can come back to the queue when its worker died)."""
        for worker in self.workers:
            if worker.ready and worker.job is None and pending:
                job = pending.popleft() if worker.complete else self._uncompiled_part(pending)
                if job is None:
                    continue
                try:
                    worker.connection.send(job)
                    worker.job = job
                except OSError:  # the worker is exiting: its death is handled when its sentinel fires
                    pending.appendleft(job)

    def _uncompiled_part(self, pending: deque) -> _Job | None:
        """For a worker without the numba extractors: the first queued clip's other extractors, taken out of the
        queue (its numba ones stay in its place, a job of their own; the clip is decoded twice)."""
        for index, job in enumerate(pending):
            part = tuple(entry for entry in job.entries if not self.extractors[entry[0]].uses_jit_cache)
            if not part:
                continue
            rest = tuple(entry for entry in job.entries if self.extractors[entry[0]].uses_jit_cache)
            if rest:
                pending[index] = _Job(job.clip_id, job.path, rest)
                self.parts_left[job.clip_id] += 1
            else:
                del pending[index]
            return _Job(job.clip_id, job.path, part)
        return None

    def _finished(self, clip_id: str, on_done: Callable[[], None]) -> None:
        """One job of the clip has ended: the clip has when its last part has."""
        if self.parts_left[clip_id]:
            self.parts_left[clip_id] -= 1
        else:
            on_done()

    def _on_death(self, worker: _Worker, pending: deque, attempts: Counter, uncached: dict, on_done: Callable[[], None]) -> None:
        worker.process.join()
        cause = _death_cause(worker.process.exitcode)
        worker.connection.close()
        self.workers.remove(worker)
        job = worker.job
        if job is None:
            if worker.ready:  # idle: nothing lost
                return
            self.failed_starts += 1
            if self.failed_starts >= self.MAX_FAILED_STARTS:
                raise RuntimeError(f"{self.failed_starts} extraction workers in a row died while loading the extractors "
                                   f"(the last {cause}); try --workers 1 to see the error")
            return
        retry_or_report(job, cause, self.extractors, pending, attempts, uncached, lambda: self._finished(job.clip_id, on_done))

    def _stop(self) -> None:
        for worker in self.workers:
            try:
                worker.connection.send(None)
            except OSError:
                pass
        for worker in self.workers:
            worker.process.join(timeout=10 if worker.job is None else 0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.workers.clear()


def extract_in_this_process(jobs: list[_Job], extractors: list[Extractor], on_done: Callable[[], None]) -> dict[tuple[int, str], ClipResult]:
    """Extract the jobs one after another in this process; returns the results that could not be cached."""
    # A worker is one core: BLAS threads beside it only oversubscribe the cores (librosa's mel products ran 20 to
    # 30 times slower with two BLAS threads on two busy cores). One thread everywhere also keeps the floats
    # independent of the worker count (MFCC last bits differed between threaded and single-threaded BLAS).
    uncached: dict[tuple[int, str], ClipResult] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        _load_extractors(extractors)
        try:
            for job in jobs:
                clip_id, results = _run_job(job, extractors)
                uncached.update({(i, clip_id): result for i, result in results.items()})
                on_done()
        finally:
            for extractor in extractors:
                extractor.close()
    return uncached


def extract_locally(jobs: list[_Job], extractors: list[Extractor], workers: int,
                    on_done: Callable[[], None]) -> dict[tuple[int, str], ClipResult]:
    """Extract the jobs on this machine, in this process (1 worker) or in a pool of worker processes; `on_done` is
    called once per finished clip. Returns the results that could not be cached ({(extractor index, clip id): result});
    every other result is in the cache."""
    if workers <= 1:
        return extract_in_this_process(jobs, extractors, on_done)
    return _WorkerPool(extractors, min(workers, len(jobs))).run(jobs, on_done)


def _at_lowest_priority(function: Callable[[], None]) -> None:
    """Run `function` in this thread at the lowest CPU priority (nice 19). On Linux niceness is per thread, and the
    threads it starts (torch's) inherit it: the text encoding then takes the cycles the extraction workers leave
    (while they start, load and wait) and no core from them. The thread cannot raise its priority again, so on a
    machine loaded by others the encoding can finish well after the workers."""
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    function()


def _run_jobs(jobs: list[_Job], extractors: list[Extractor], workers: int, progress: bool,
              meanwhile: Callable[[], None]) -> dict[tuple[int, str], ClipResult]:
    """Extract the media jobs while `meanwhile` (the text encoding) runs beside them in a thread of this process."""
    bar = tqdm(total=len(jobs), unit="clip", desc="extract", disable=not progress or not jobs, smoothing=0.1)
    # The media are extracted from this thread (a worker's death signal follows the thread that started it).
    # With a core per worker the text would take one of theirs: it runs at the lowest priority then; with a core
    # to spare, at the normal one.
    spare_core = workers < (os.cpu_count() or 1)
    with ThreadPoolExecutor(1, thread_name_prefix="robustmm-text") as text_thread:
        text = text_thread.submit(meanwhile) if spare_core else text_thread.submit(_at_lowest_priority, meanwhile)
        with bar:
            uncached = extract_locally(jobs, extractors, workers, lambda: bar.update(1))
        text.result()
    return uncached


def _cached(path: Path, clip: Clip, extractor: Extractor) -> ClipResult | None:
    """The cache entry of `clip` (None when absent); a damaged entry is named, removed and extracted again."""
    if extractor.modality == "text":
        shapes = {"text_bert": (3, extractor.config.max_length), "text": (extractor.config.max_length, extractor.dim)}
    else:
        shapes = {"features": (None, extractor.dim)}
    try:
        return FeatureCache.load(path, shapes)
    except DamagedEntry as damage:
        _warn(f"damaged cache entry {path} ({extractor.modality} of clip {clip.id}, {clip.path}): {damage}; extracting it again")
        path.unlink(missing_ok=True)
        return None


def _extract_text(clips: list[Clip], extractor: BertExtractor, cache: FeatureCache, progress: bool,
                  shard: Shard | None = None) -> list[ClipResult | None]:
    """Every clip's text features, encoding the transcripts not yet cached. Batches are fixed slices of the sorted
    clip list, so a resumed run computes every clip in the same batch as an uninterrupted run would (identical floats);
    a shard encodes its share of the batches (None for the others' clips)."""
    entries = [cache.entry(text_hash(clip.text), extractor) for clip in clips]
    results = [_cached(path, clip, extractor) for path, clip in zip(entries, clips)]
    size = extractor.config.batch_size
    starts = list(range(0, len(clips), size))
    starts = [start for start in (shard.select(starts) if shard else starts)
              if any(result is None for result in results[start:start + size])]
    if starts:
        extractor.load()
    for start in tqdm(starts, unit="batch", desc="text", disable=not progress):
        batch = slice(start, start + size)
        text_bert, text = extractor.extract_batch([clip.text for clip in clips[batch]])
        for index, ids, hidden in zip(range(start, len(clips)), text_bert, text):
            if results[index] is None:
                results[index] = ClipResult({"text_bert": ids, "text": hidden})
                FeatureCache.store(entries[index], results[index])
    return results


def _transcript_tokens(extractor: BertExtractor, clips: list[Clip]) -> list[int]:
    """Tokens of each whole transcript with [CLS] and [SEP], before `max_length` cuts it (assemble reports the cut)."""
    from robustmm.text_encoder import OFFLINE_ENCODER, TextEncoder

    if extractor.loaded:  # the encoding's own tokenizer: loading another took longer than the counting
        tokenizer = extractor.encoder.tokenizer
    else:  # every transcript was cached
        tokenizer = TextEncoder(extractor.config.model or OFFLINE_ENCODER, load_weights=False).tokenizer
    return [len(ids) for ids in tokenizer([clip.text for clip in clips], verbose=False)["input_ids"]]


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
        # assemble compares them with label.csv: token ids of an edited transcript must not pass for the new text
        features["transcript_hashes"] = [text_hash(clip.text) for clip in clips]
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
    executor: str = "local",
    ray_address: str | None = None,
    shard: Shard | None = None,
) -> dict[str, dict]:
    """Extract the modalities in `extractors` ({modality: (extractor name, config dict)}) of every clip.

    Each clip is decoded once for all its audio and vision extractors. Writes `outputs[modality]` and its
    report; returns {modality: report}. Raises RuntimeError (after writing every report) when a modality
    has more than `max_failure_share` failed clips; those modalities' features files are not written.
    `executor` "ray" extracts on the Ray cluster at `ray_address` (robustmm.executors.connect_ray). With
    `shard`, only that shard's clips (and text batches) are extracted into the cache and nothing is written;
    returns {modality: {"clips": the shard's share of the clips}}.
    """
    if set(extractors) != set(outputs):
        raise ValueError(f"extractors for {sorted(extractors)} but outputs for {sorted(outputs)}")
    if not 0.0 <= max_failure_share <= 1.0:
        raise ValueError(f"max_failure_share must be within [0, 1], got {max_failure_share}")
    built = {modality: create_extractor(name, config, modality) for modality, (name, config) in extractors.items()}
    for extractor in built.values():
        _ = extractor.feature_names  # a bad config (e.g. an unknown feature set) fails here, before any work
    all_clips = read_dataset(dataset_dir)
    clips = shard.select(all_clips) if shard else all_clips
    cache = FeatureCache(cache_dir)
    use_private_jit_cache()
    run_jobs = _run_jobs
    if executor == "ray":
        from robustmm.executors import connect_ray, ray_extract

        ray = connect_ray(ray_address)
        run_jobs = functools.partial(ray_extract.run_jobs, ray)
        if "text" in built:
            built["text"] = ray_extract.text_extractor(ray, built["text"])
    else:
        workers = (os.cpu_count() or 1) if workers is None else workers

    media = [(modality, extractor) for modality, extractor in built.items() if modality != "text"]
    media_extractors = [extractor for _, extractor in media]
    for extractor in media_extractors:
        extractor.check()
    hashes = {clip.id: file_hash(clip.path) for clip in clips} if media else {}
    results: dict[tuple[int, str], ClipResult] = {}
    jobs = []
    for clip in clips:
        entries = []
        for i, extractor in enumerate(media_extractors):
            path = cache.entry(hashes[clip.id], extractor)
            if (result := _cached(path, clip, extractor)) is None:
                entries.append((i, str(path)))
            else:
                results[(i, clip.id)] = result
        if entries:
            jobs.append(_Job(clip.id, str(clip.path), tuple(entries)))
    text_results: list[ClipResult] = []

    def extract_text() -> None:
        if "text" in built:
            text_results.extend(_extract_text(all_clips, built["text"], cache, progress, shard))

    if jobs:
        results.update(run_jobs(jobs, media_extractors, workers, progress, meanwhile=extract_text))
    else:
        extract_text()
    if shard:
        return {modality: {"clips": len(clips)} for modality in built}
    if "text" in built:
        tokens = _transcript_tokens(built["text"], clips)
        text_results = [ClipResult(result.arrays, result.failure, {"tokens": count}) for result, count in zip(text_results, tokens)]

    reports, problems = {}, []
    for modality, extractor in built.items():
        if modality == "text":
            modality_results = text_results
        else:
            index = media_extractors.index(extractor)
            modality_results = [results.get((index, clip.id)) or FeatureCache.load(cache.entry(hashes[clip.id], extractor), {})
                                for clip in clips]
        features, report = _modality_output(modality, extractor, clips, modality_results)
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
    executor: str = "local",
    ray_address: str | None = None,
) -> dict:
    """One modality's features file (default `features/<modality>.pkl`); returns its report."""
    output = output if output is not None else Path("features") / f"{modality}.pkl"
    return extract(dataset_dir, {modality: (extractor_name, config)}, {modality: output}, cache_dir, workers,
                   max_failure_share, progress, executor, ray_address)[modality]


def read_features(path: str | os.PathLike) -> dict:
    """A features file written by extract (restricted unpickling; checks what it is)."""
    loaded = data.read_pkl(path)
    if loaded.get("kind") != FEATURES_KIND:
        raise data.FormatError(path, ["not a robustmm modality features file (written by `robustmm extract`)"])
    return loaded

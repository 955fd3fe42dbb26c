"""Media extraction on Ray: a pool of actors that each load the extractors once (as a local worker process does)
and extract one clip per call; the text encoder as one GPU actor when the cluster has a GPU.

The driver keeps the per-clip cache: actors return each clip's results and the driver stores them, so the cache
need not be shared with the cluster (the clips must be readable at the same path on every node). A clip whose
actor dies (killed, out of memory, its node lost) is retried once in a fresh actor, then reported failed with
the cause, as in a local run; an error that is not the clip's stops the run naming the clip.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from robustmm.features.base import Extractor
from robustmm.features.cache import ClipResult, FeatureCache, use_private_jit_cache
from robustmm.features.extract import _Job, _load_extractors, extract_clip, retry_or_report
from robustmm.features.text import BertExtractor


class ExtractionActor:
    """One Ray actor (one CPU): the extractors, loaded once."""

    def __init__(self, specs: list[tuple[type[Extractor], object]]):
        use_private_jit_cache()  # before librosa imports numba; Ray workers do not inherit the driver's setting
        threadpool_limits(limits=1, user_api="blas")  # one core per actor, and floats independent of the actor count
        self.extractors = [cls(config) for cls, config in specs]
        _load_extractors(self.extractors)

    def pid(self) -> int:
        return os.getpid()

    def extract(self, path: str, indices: list[int]) -> tuple[dict[int, tuple[ClipResult, bool]], float]:
        """The clip's results ({index: (result, cacheable)}) and the seconds spent extracting it here (for Ray's
        overhead in benchmarks/scale.py)."""
        start = time.perf_counter()
        results = extract_clip(Path(path), {i: self.extractors[i] for i in indices})
        return results, time.perf_counter() - start


class ActorPool:
    """`size` extraction actors; `run` feeds them the jobs, retries clips of dead actors, stores the results."""

    def __init__(self, ray, extractors: list[Extractor], size: int):
        self.ray, self.extractors, self.size = ray, extractors, size
        self.specs = [(type(extractor), extractor.config) for extractor in extractors]
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ExtractionActor)

    def _start(self, count: int) -> list:
        """`count` actors with their extractors loaded (they load at once, each on its own CPU)."""
        actors = [self.actor_class.remote(self.specs) for _ in range(count)]
        try:
            self.ray.get([actor.pid.remote() for actor in actors])
        except self.ray.exceptions.RayActorError as error:
            for actor in actors:
                self.ray.kill(actor)
            raise RuntimeError(f"loading the extractors in a Ray actor failed: {error}") from None
        return actors

    def run(self, jobs: list[_Job], bar: tqdm) -> dict[tuple[int, str], ClipResult]:
        ray = self.ray
        pending, attempts, uncached = deque(jobs), Counter(), {}
        idle = self._start(min(self.size, len(jobs)))
        in_flight = {}
        try:
            while pending or in_flight:
                while idle and pending:
                    actor, job = idle.pop(), pending.popleft()
                    in_flight[actor.extract.remote(job.path, [i for i, _ in job.entries])] = (actor, job)
                (done,), _ = ray.wait(list(in_flight), num_returns=1)
                actor, job = in_flight.pop(done)
                try:
                    results, _ = ray.get(done)
                except ray.exceptions.RayActorError as error:
                    ray.kill(actor)
                    idle += self._start(1)
                    retry_or_report(
                        job,
                        f"Ray actor: {_first_line(error)}",
                        self.extractors,
                        pending,
                        attempts,
                        uncached,
                        lambda: bar.update(1),
                    )
                    continue
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause if error.cause is not None else error
                    raise RuntimeError(f"{job.path}: {type(cause).__name__}: {cause}") from None
                idle.append(actor)
                paths = dict(job.entries)
                for i, (result, cacheable) in results.items():
                    if cacheable:
                        FeatureCache.store(Path(paths[i]), result)
                    else:
                        uncached[(i, job.clip_id)] = result
                bar.update(1)
        finally:
            for actor in idle + [actor for actor, _ in in_flight.values()]:
                ray.kill(actor)
        return uncached


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def run_jobs(
    ray,
    jobs: list[_Job],
    extractors: list[Extractor],
    workers: int | None,
    progress: bool,
    meanwhile: Callable[[], None],
) -> dict[tuple[int, str], ClipResult]:
    """As the local pool's `_run_jobs`: the media jobs on `workers` actors (None or more than the cluster's CPUs:
    one per CPU of the cluster),
    `meanwhile` (the text encoding) in a thread of this process."""
    bar = tqdm(total=len(jobs), unit="clip", desc="extract (ray)", disable=not progress or not jobs, smoothing=0.1)
    # More actors than the cluster's CPUs would wait for a CPU forever.
    pool = ActorPool(ray, extractors, min(workers or cluster_cpus(ray), cluster_cpus(ray)))
    with ThreadPoolExecutor(1) as text_thread:
        text = text_thread.submit(meanwhile)
        with bar:
            uncached = pool.run(jobs, bar)
        text.result()
    return uncached


class TextActor:
    """The text encoder on one GPU of the cluster (it claims no CPU: the extraction actors may hold them all)."""

    def __init__(self, cls: type[BertExtractor], config):
        self.extractor = cls(config)
        self.extractor.load()

    def extract_batch(self, texts: list[str]):
        return self.extractor.extract_batch(texts)


class RemoteTextExtractor:
    """Stands in for a BertExtractor: the same name, config and cache entries, its batches encoded by a TextActor
    (started on the first batch to encode, so a fully cached run claims no GPU)."""

    def __init__(self, ray, extractor: BertExtractor):
        self._ray, self._local, self._actor = ray, extractor, None

    def __getattr__(self, name):
        return getattr(self._local, name)

    def load(self) -> None:
        if self._actor is None:
            actor_class = self._ray.remote(num_gpus=1, num_cpus=0)(TextActor)
            self._actor = actor_class.remote(type(self._local), self._local.config)

    def extract_batch(self, texts: list[str]):
        return self._ray.get(self._actor.extract_batch.remote(texts))


def text_extractor(ray, extractor: BertExtractor):
    """`extractor` itself (encoding in this process), or its GPU actor when the cluster has a GPU and the
    extractor may use it."""
    if extractor.config.device == "cpu" or ray.cluster_resources().get("GPU", 0) < 1:
        return extractor
    return RemoteTextExtractor(ray, extractor)

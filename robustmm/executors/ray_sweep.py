"""The sweep on Ray: one task per (rate, seed) claiming `sweep.resources`, each training in (and writing) its own
run folder, so finished runs are reused and unfinished ones resumed as in a local sweep. A task whose worker or
node dies is retried by Ray and resumes from the run's last epoch. The feature file and the run folders must be
at the same path on every node (shared storage); paths are made absolute for that."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from robustmm.experiments import RunTask, SweepData, _in_order, collect_rows, train_run
from robustmm.progress import SweepProgress
from robustmm.settings import RunResources

TASK_RETRIES = 2  # a lost worker or node: the run resumes from its last.pt


def _train_task(shared: SweepData, task: RunTask, threads: int) -> tuple[RunTask, dict]:
    torch.set_num_threads(threads)
    return task, train_run(shared, task)


def run_tasks(
    ray,
    shared: SweepData,
    tasks: list[RunTask],
    resources: RunResources,
    torch_threads: int | None,
    shown: SweepProgress,
) -> list[dict]:
    """The rows of `tasks`, in their order. Each run uses `torch_threads` threads (None: its CPUs, at least one)."""
    shared = dataclasses.replace(shared, data=str(Path(shared.data).resolve()))
    tasks = [dataclasses.replace(task, run_dir=str(Path(task.run_dir).resolve())) for task in tasks]
    threads = torch_threads or max(1, int(resources.cpus))
    remote = ray.remote(_train_task).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=TASK_RETRIES)
    pending = [remote.remote(shared, task, threads) for task in tasks]

    def finished():
        nonlocal pending
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as error:
                for ref in pending:
                    ray.cancel(ref)
                raise error.cause if isinstance(error.cause, Exception) else error from None

    return _in_order(tasks, collect_rows(finished(), shown))

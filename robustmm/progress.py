"""What a sweep shows while it runs: one overall bar (runs done / total, ETA) and one line per finished run.

The bar is drawn only when stderr is an interactive terminal (per-epoch bars too, see `interactive`); the lines
always go to stderr, so that a `dvc repro` log holds one line per run and no bar updates. The sweep calls
`run_started` and `run_finished` around each run in whatever order the runs finish.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from tqdm import tqdm


def interactive(stream=None) -> bool:
    """Whether `stream` (default stderr) is a terminal a person watches, where redrawn bars read well."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class SweepProgress:
    """Progress over the `total` runs of a sweep; `bar=False` draws no bar even on a terminal. `parallel` runs
    train at once (None: unknown, as on a Ray cluster, where the ETA is not shown)."""

    def __init__(self, total: int, bar: bool = True, stream=None, parallel: int | None = 1):
        self.total, self.done, self.parallel = total, 0, parallel
        self.stream = sys.stderr if stream is None else stream
        self._trained_seconds, self._trained_runs = 0.0, 0
        self._started: dict[tuple[float, int], float] = {}
        self._clock = time.perf_counter
        self._bar = tqdm(
            total=total,
            desc="sweep",
            unit="run",
            file=self.stream,
            dynamic_ncols=True,
            bar_format="{desc} {n_fmt}/{total_fmt} runs |{bar}| {elapsed}{postfix}",
            disable=not (bar and interactive(self.stream)),
        )

    def eta_seconds(self) -> float | None:
        """The runs left times the mean time of the runs trained so far (reused runs take no time); None
        before any run was trained."""
        if not self._trained_runs or self.parallel is None:
            return None
        return self._trained_seconds / self._trained_runs * (self.total - self.done) / self.parallel

    def run_started(self, rate: float, seed: int) -> None:
        self._started[(rate, seed)] = self._clock()

    def run_finished(
        self, rate: float, seed: int, result: dict, reused: bool = False, seconds: float | None = None
    ) -> None:
        """Count the run and write its line: epochs, best validation loss, key test metric, time, ETA. `seconds`:
        the run's own time, where it trained in another process (else the time since `run_started`)."""
        now = self._clock()
        started = self._started.pop((rate, seed), now)
        seconds = now - started if seconds is None else seconds
        self.done += 1
        if not reused:
            self._trained_seconds, self._trained_runs = self._trained_seconds + seconds, self._trained_runs + 1
        eta = self.eta_seconds()
        test = result["test"]
        scores = ", ".join(
            f"{name} {test[name]:.4f}"
            for name in ("MAE", "Has0_acc_2", "Mult_acc_2", "CCC")
            if test.get(name) is not None
        )
        how = "reused" if reused else f"{result['epochs']} epochs (best {result['best_epoch']}), {seconds:.1f} s"
        line = (
            f"run {self.done}/{self.total} rate {rate:g} seed {seed}: {how}, valid loss "
            f"{result['best_valid_loss']:.4f}, test {scores}" + ("" if eta is None else f"; ETA {_clock(eta)}")
        )
        self._bar.write(line, file=self.stream)
        self._bar.set_postfix_str("" if eta is None else f"ETA {_clock(eta)}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

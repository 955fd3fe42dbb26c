"""What a sweep shows while it runs: one line per finished run always, the overall bar only on a terminal."""

import io

from robustmm.progress import SweepProgress, interactive


class Terminal(io.StringIO):
    def isatty(self):
        return True


def finished(epochs=3, mae=1.25):
    return {
        "epochs": epochs,
        "best_epoch": 2,
        "best_valid_loss": 0.5,
        "test": {"MAE": mae, "Has0_acc_2": 0.75, "Corr": None},
    }


def test_a_log_gets_one_line_per_run_with_runs_done_and_eta_and_no_bar():
    log = io.StringIO()
    assert not interactive(log)
    with SweepProgress(3, stream=log) as progress:
        progress.run_started(0.0, 1111)
        progress.run_finished(0.0, 1111, finished(), reused=True)
        for rate in (0.5, 1.0):
            progress.run_started(rate, 1111)
            progress.run_finished(rate, 1111, finished())
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert lines[0].startswith(
        "run 1/3 rate 0 seed 1111: reused, valid loss 0.5000, test MAE 1.2500, Has0_acc_2 0.7500"
    )
    assert "ETA" not in lines[0]  # nothing trained yet: no time to extrapolate from
    assert lines[1].startswith("run 2/3 rate 0.5 seed 1111: 3 epochs (best 2)") and lines[1].endswith("ETA 0:00:00")
    assert lines[2].startswith("run 3/3 rate 1 seed 1111")


def test_eta_is_the_mean_time_of_trained_runs_times_the_runs_left():
    clock = iter([0.0, 10.0, 10.0, 10.0, 20.0, 40.0])
    progress = SweepProgress(5, stream=io.StringIO())
    progress._clock = lambda: next(clock)
    progress.run_started(0.0, 1)
    progress.run_finished(0.0, 1, finished())  # 10 s
    progress.run_started(0.1, 1)
    progress.run_finished(0.1, 1, finished(), reused=True)  # takes no part in the mean
    progress.run_started(0.2, 1)
    progress.run_finished(0.2, 1, finished())  # 20 s
    assert progress.eta_seconds() == 15.0 * 2


def test_a_terminal_gets_the_overall_bar_unless_bars_are_off():
    screen = Terminal()
    with SweepProgress(2, stream=screen) as progress:
        progress.run_started(0.0, 1)
        progress.run_finished(0.0, 1, finished())
    assert "sweep 1/2 runs" in screen.getvalue() and "run 1/2 rate 0 seed 1" in screen.getvalue()

    quiet = Terminal()
    with SweepProgress(2, bar=False, stream=quiet) as progress:
        progress.run_started(0.0, 1)
        progress.run_finished(0.0, 1, finished())
    assert "sweep" not in quiet.getvalue() and quiet.getvalue().count("\n") == 1

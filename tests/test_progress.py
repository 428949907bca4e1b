"""Progress bars: tqdm, quiet in files and logs, silent when disabled."""
import io as stdio

import numpy as np
import pytest

import kernelkip as kk
from kernelkip._progress import progress_bar


def test_bar_shows_count_and_postfix():
    out = stdio.StringIO()
    with progress_bar(10, "distill", file=out) as bar:
        bar.update(3)
        bar.set_postfix(loss="0.5")
    assert "3/10" in out.getvalue() and "loss=0.5" in out.getvalue()
    assert "distill" in out.getvalue()


def test_disabled_bar_prints_nothing():
    out = stdio.StringIO()
    with progress_bar(10, "x", file=out, disable=True) as bar:
        bar.update()
    assert out.getvalue() == ""


def test_resumed_bar_starts_at_initial():
    out = stdio.StringIO()
    with progress_bar(10, "x", file=out, initial=4) as bar:
        bar.update()
    assert "5/10" in out.getvalue()


def test_bar_in_a_file_is_throttled():
    """Not a terminal: no redraw per step, so a log holds a handful of lines, not 1000."""
    out = stdio.StringIO()
    with progress_bar(1000, "x", file=out) as bar:
        for _ in range(1000):
            bar.update()
    text = out.getvalue()
    assert "1000/1000" in text and text.count("/1000") <= 3, text


@pytest.mark.parametrize("progress", [True, False])
def test_distill_bar_goes_to_stderr_and_no_progress_silences_it(capsys, progress):
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(40, 5)), np.arange(40) % 2
    y = np.eye(2)[labels] - 0.5
    kk.distill(kk.objectives.kip(kk.FC(depth=1)),
               {"x_support": x[:4].copy(), "y_support": y[:4].copy()},
               kk.TargetSampler(x, y, labels, 20), steps=3, progress=progress)
    err = capsys.readouterr().err
    assert ("3/3" in err) == progress and ("distill" in err) == progress

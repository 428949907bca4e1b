"""The progress bar's output."""
import io as stdio

from kernelkip._progress import Progress


def test_progress_line_shows_count_and_postfix():
    out = stdio.StringIO()
    with Progress(10, desc="distill", file=out, min_interval=0) as bar:
        bar.update(3, loss="0.5")
    assert "3/10" in out.getvalue() and "loss=0.5" in out.getvalue()


def test_disabled_bar_prints_nothing():
    out = stdio.StringIO()
    with Progress(10, file=out, disable=True, min_interval=0) as bar:
        bar.update()
    assert out.getvalue() == ""


def test_resumed_bar_starts_at_initial():
    out = stdio.StringIO()
    with Progress(10, file=out, initial=4, min_interval=0) as bar:
        bar.update()
    assert "5/10" in out.getvalue()


def test_throttled_bar_prints_first_and_final_lines_only():
    out = stdio.StringIO()
    with Progress(100, file=out, min_interval=3600) as bar:
        for _ in range(100):
            bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "1/100" in lines[0] and "100/100" in lines[1]

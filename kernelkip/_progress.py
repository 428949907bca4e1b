"""A small dependency-free progress bar (tqdm-like) for long loops."""
import sys
import time

__all__ = ["Progress"]


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``desc  37%|#####     | 370/1000 [00:12<00:20, 30.1it/s, loss=0.12]`` on ``file``.

    On a terminal the line is redrawn in place; elsewhere (logs, CI) at most one line is printed
    every ``min_interval`` seconds, plus a final one. ``disable=True`` prints nothing.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(2, desc="demo", file=out, min_interval=0) as bar:
    ...     bar.update()
    ...     bar.update(loss="0.5")
    >>> "2/2" in out.getvalue()
    True
    """

    def __init__(self, total, desc="", file=None, disable=False, min_interval=None, initial=0,
                 width=20):
        self.total, self.desc, self.n, self.width = total, desc, int(initial), width
        self.file = sys.stderr if file is None else file
        self.disable = bool(disable)
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.min_interval = (0.1 if self.tty else 10.0) if min_interval is None else min_interval
        self.start = time.perf_counter()
        self.initial = int(initial)
        self.postfix = {}
        self.last = -float("inf")
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self):
        elapsed = time.perf_counter() - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        post = "".join(f", {k}={v}" for k, v in self.postfix.items())
        if self.total:
            frac = min(self.n / self.total, 1.0)
            fill = int(round(frac * self.width))
            left = (self.total - self.n) / rate if rate > 0 else 0
            return (f"{self.desc} {100 * frac:3.0f}%|{'#' * fill}{' ' * (self.width - fill)}| "
                    f"{self.n}/{self.total} [{_fmt_time(elapsed)}<{_fmt_time(left)}, "
                    f"{rate:.3g}it/s{post}]")
        return f"{self.desc} {self.n} [{_fmt_time(elapsed)}, {rate:.3g}it/s{post}]"

    def _print(self, final=False):
        if self.disable:
            return
        line = self._line()
        if self.tty:
            self.file.write("\r" + line + ("\n" if final else ""))
        else:
            self.file.write(line + "\n")
        self.file.flush()

    def update(self, n=1, **postfix):
        """Advance by ``n`` and set the postfix fields shown after the rate."""
        self.n += n
        self.postfix.update(postfix)
        now = time.perf_counter()
        if now - self.last >= self.min_interval:
            self.last = now
            self._print()

    def close(self):
        """Print the final line (once)."""
        if not self.closed:
            self.closed = True
            self._print(final=True)

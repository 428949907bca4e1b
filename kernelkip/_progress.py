"""Progress bars: tqdm, with one policy for every loop of the package.

On a terminal the bar redraws often; written to a file or a CI log (not a terminal) it prints
a line at most every 30 seconds, so logs stay short. ``disable=True`` prints nothing (the
CLI's ``--no-progress``).
"""
import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def _mininterval(file):
    return 0.1 if getattr(file, "isatty", lambda: False)() else 30.0


def progress_bar(total, desc, *, disable=False, initial=0, file=None):
    """A ``tqdm`` bar over ``total`` items (``update(n)``, ``set_postfix(...)``, context
    manager).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with progress_bar(2, "demo", file=out) as bar:
    ...     bar.update(2)
    >>> "2/2" in out.getvalue()
    True
    """
    file = sys.stderr if file is None else file
    return tqdm(total=total, desc=desc, initial=initial, disable=disable, file=file,
                mininterval=_mininterval(file), dynamic_ncols=True)

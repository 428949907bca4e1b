"""Timing, peak-memory and environment capture shared by the benchmark scripts.

Standard library only (``psutil`` is used for the current RSS when it is installed).

- :func:`measure` -- warm-up calls (they absorb Numba/XLA compilation), then the median and
  interquartile range of ``repeats`` timed calls.
- :func:`run_isolated` / :func:`peak_memory_mb` -- peak resident-set growth of one call, measured
  in a fresh ``spawn`` child so that earlier allocations in this process cannot hide it.
- :func:`env_info` -- machine, thread settings and library versions, stored with every result.
- :func:`write_json` -- ``bench/results/<name>.json`` (the directory is gitignored).
- :func:`print_table` -- a markdown table.
- :func:`write_figure` / :func:`timing_figure` -- ``bench/results/<name>.png`` beside the JSON
  (matplotlib, imported only here and only when installed: without it the PNG is skipped).
"""
import datetime
import importlib
import importlib.util
import json
import multiprocessing
import os
import platform
import queue as queue_mod
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["measure", "run_isolated", "peak_memory_mb", "env_info", "write_json", "print_table",
           "write_figure", "timing_figure", "RESULTS_DIR"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "XLA_FLAGS",
               "KERNELKIP_NUM_THREADS")
VERSIONED = ("kernelkip", "numpy", "scipy", "numba", "cupy", "jax", "jaxlib", "neural-tangents",
             "torch", "psutil")


def measure(fn, *, repeats=7, warmup=1):
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``fn`` must finish its work before returning (call ``block_until_ready()`` on JAX outputs).

    Returns
    -------
    dict
        ``median_s``, ``iqr_s`` (75th minus 25th percentile), ``min_s`` and ``times`` (seconds,
        in call order).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return {"median_s": statistics.median(times), "iqr_s": q3 - q1, "min_s": min(times),
            "times": times}


# ----------------------------------------------------------------------------- peak memory

def _status_kb(field):
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak():
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _maxrss_mb():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10   # bytes on macOS, kB elsewhere


def _rss_mb():
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def _start():
    """Mark the start of a measured call: (baseline MB, method)."""
    rss = _rss_mb()
    if rss is not None and _reset_peak() and _status_kb("VmHWM") is not None:
        return rss, "VmHWM"
    return _maxrss_mb(), "ru_maxrss"


def _peak(method):
    return _status_kb("VmHWM") / 1024 if method == "VmHWM" else _maxrss_mb()


def _child(module, func, kwargs, queue):
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
        fn = getattr(mod, func)
        before, method = _start()
        value = fn(**kwargs)
        wall = None
        if callable(value):                  # fn was the set-up; measure what it returned
            before, method = _start()
            t0 = time.perf_counter()
            value = value()
            wall = time.perf_counter() - t0
        peak = _peak(method)
        out = {"peak_mb": max(peak - before, 0.0), "baseline_mb": before, "peak_rss_mb": peak,
               "method": method, "wall_s": wall}
        if value is None or isinstance(value, (bool, int, float, str)):
            out["value"] = value
        queue.put(("ok", out))
    except BaseException as exc:  # report every failure to the parent instead of hanging it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_isolated(module, func, kwargs=None, *, timeout=None):
    """Run ``module.func(**kwargs)`` in a fresh ``spawn`` child and report its peak RSS growth.

    If ``func`` returns a callable, the call to ``func`` is the set-up (building inputs, JIT
    compilation) and only the returned zero-argument callable is measured. Otherwise the call to
    ``func`` itself is measured.

    On Linux the kernel's high-water mark is reset just before the measured call (write ``5``
    to ``/proc/self/clear_refs``) and ``peak_mb = VmHWM - VmRSS before``, which is exact. Where
    that is unavailable it falls back to the growth of ``getrusage(RUSAGE_SELF).ru_maxrss``,
    a lower bound when the set-up peaked higher than the call.

    Returns
    -------
    dict
        ``peak_mb``, ``baseline_mb`` (RSS before the call, or the earlier high-water mark for
        ``ru_maxrss``), ``peak_rss_mb``, ``method`` (``"VmHWM"`` or ``"ru_maxrss"``),
        ``wall_s`` (None when there was no separate set-up) and ``value`` when the measured
        call returned a scalar or a string.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(module, func, dict(kwargs or {}), queue))
    proc.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            status, payload = queue.get(timeout=0.2)
            break
        except queue_mod.Empty:
            if not proc.is_alive() and queue.empty():
                proc.join()
                raise RuntimeError(f"{module}.{func}: the child process died without a report "
                                   f"(exit code {proc.exitcode}; killed for memory?)") from None
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                proc.join()
                raise RuntimeError(f"{module}.{func} did not report within {timeout} s") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{module}.{func} failed in the child process: {payload}")
    return payload


def peak_memory_mb(fn, *args, timeout=None, **kwargs):
    """Peak RSS growth (MB) of ``fn(*args, **kwargs)`` in a fresh child process.

    ``fn`` must be picklable by reference (a module-level function, possibly wrapped in
    ``functools.partial``). If it returns a callable, that callable is what gets measured
    (see :func:`run_isolated`).
    """
    return run_isolated(__name__, "_call_pickled", {"fn": fn, "args": args, "kwargs": kwargs},
                        timeout=timeout)["peak_mb"]


def _call_pickled(fn, args, kwargs):
    return fn(*args, **kwargs)


# ----------------------------------------------------------------------------- environment

def _version(dist):
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _module_version(dist):
    mod = sys.modules.get(dist.replace("-", "_"))
    return getattr(mod, "__version__", None)


def _blas():
    np = sys.modules.get("numpy")
    if np is None:
        return None
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return None


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def env_info():
    """Machine, thread settings and versions, as a JSON-ready dict."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "threads": {k: os.environ.get(k) for k in THREAD_VARS},
        "python": platform.python_version(),
        "versions": {d: _version(d) or _module_version(d) for d in VERSIONED},
        "blas": _blas(),
        "git": _git_commit(),
    }


# ----------------------------------------------------------------------------- output

def write_json(name, rows, params):
    """Write ``{"name", "params", "env", "rows"}`` to ``bench/results/<name>.json``.

    Returns the path written.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {"name": name, "params": params, "env": env_info(), "rows": rows}
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(obj):
    if hasattr(obj, "tolist"):       # NumPy scalars and arrays
        return obj.tolist()
    return str(obj)


def _fmt(value):
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return "" if value is None else str(value)


def print_table(rows, columns, *, file=None):
    """Print ``rows`` (dicts) as a markdown table.

    ``columns`` lists keys, or ``(key, header)`` pairs to rename a column.
    """
    cols = [(c, c) if isinstance(c, str) else tuple(c) for c in columns]
    lines = ["| " + " | ".join(h for _, h in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k, _ in cols) + " |" for row in rows]
    print("\n".join(lines), file=file or sys.stdout)


# ----------------------------------------------------------------------------- figures

def write_figure(name, make, *, dpi=100):
    """Write ``bench/results/<name>.png`` from ``make()``, a zero-argument callable returning a
    matplotlib Figure. Without matplotlib, print a note and return None; else the path."""
    if importlib.util.find_spec("matplotlib") is None:
        print(f"note: matplotlib is not installed; no {name}.png (pip install kernelkip[plot])")
        return None
    from kernelkip import _deps
    plt = _deps.get_pyplot()
    fig = make()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.png"
    try:
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    print("wrote", path)
    return path


def timing_figure(rows, label, series, *, unit="s", title=None, log=False):
    """A horizontal grouped bar chart of a timing table: one group per row, one bar per series.

    ``label`` is a key of the rows or a function of a row; ``series`` lists
    ``(key, iqr_key or None, legend)``; a series no row holds is left out, and so is a bar
    where a row lacks the key.
    """
    from kernelkip import _deps
    plt = _deps.get_pyplot()
    names = [label(r) if callable(label) else str(r.get(label)) for r in rows]
    series = [s for s in series if any(r.get(s[0]) is not None for r in rows)]
    height = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows) * max(len(series), 1) ** 0.5),
                           layout="constrained")
    for j, (key, err, legend) in enumerate(series):
        pos = [i + (j - (len(series) - 1) / 2) * height for i, r in enumerate(rows)
               if r.get(key) is not None]
        vals = [r[key] for r in rows if r.get(key) is not None]
        errs = None if err is None else [r.get(err) or 0.0 for r in rows
                                         if r.get(key) is not None]
        ax.barh(pos, vals, height=height, xerr=errs, label=legend, capsize=2)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(f"median time ({unit}); error bar: IQR")
    if log:
        ax.set_xscale("log")
    if len(series) > 1:
        ax.legend(fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig

"""Figures of distillation runs: learning curves and the distilled support set (optional).

Needs matplotlib (``pip install kernelkip[plot]``). It is imported on first use through
:mod:`kernelkip._deps`, on the Agg backend when there is no display; importing this module does
not import it. The functions return ``matplotlib.figure.Figure`` objects made with pyplot
(close them with ``plt.close(fig)`` when done) and save them when given a ``path``.

A run directory is what ``kernelkip distill`` writes: ``config.json``, ``log.jsonl`` (one record
per step: ``step``, ``loss``, ``time``, ``cpu_time``; evaluation steps add ``test_acc`` and maybe
``test_acc_rf`` and ``val_acc``) and ``distilled.npz`` (``x_support``, ``y_support``, ``labels``),
or ``checkpoint.npz`` while the run is in progress.
"""
import json
from pathlib import Path

import numpy as np

from . import _deps, io
from .data.loaders import FASHION_MNIST_CLASSES, load_dataset

__all__ = ["learning_curves", "support_grid", "write_run_figures", "read_log", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_DIGITS = tuple(str(d) for d in range(10))
# image shape and class names of the datasets whose metadata is fixed; the others (npz,
# cifar100) are looked up by loading the dataset
_KNOWN = {"digits": ((8, 8, 1), _DIGITS), "mnist": ((28, 28, 1), _DIGITS),
          "fashion-mnist": ((28, 28, 1), FASHION_MNIST_CLASSES),
          "cifar10": ((32, 32, 3), CIFAR10_CLASSES), "svhn": ((32, 32, 3), _DIGITS)}
X_AXES = {"steps": ("step", "step"), "time": ("time", "optimisation time (wall, {unit})"),
          "cpu": ("cpu_time", "optimisation time (CPU, {unit})")}


# ----------------------------------------------------------------------------- reading runs

def _run_dir(run):
    path = Path(run)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory; expected a run directory written "
                         f"by 'kernelkip distill'")
    return path


def _run_name(path):
    path = Path(path)
    return path.name or path.resolve().name


def read_log(run):
    """The records of a run's ``log.jsonl``, in step order.

    A resumed run appends to its log and may repeat the steps after its last checkpoint; the
    later record of a step wins.

    Parameters
    ----------
    run : str or path
        Run directory.

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        If ``run`` is not a directory, has no ``log.jsonl``, or a line is not a JSON object
        with an integer ``step`` (the message names the line).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> log = '{"step": 1, "loss": 2.0}\\n{"step": 0, "test_acc": 0.5}\\n'
    >>> _ = (run / "log.jsonl").write_text(log)
    >>> [r["step"] for r in read_log(run)]
    [0, 1]
    """
    path = _run_dir(run) / "log.jsonl"
    if not path.is_file():
        raise ValueError(f"{str(path.parent)!r} has no log.jsonl; is it a run directory written "
                         f"by 'kernelkip distill'?")
    by_step = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not a JSON record ({err.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError(f"{path}, line {number}: expected a JSON object with an "
                                 f"integer 'step', got {line.strip()[:80]!r}")
            by_step[rec["step"]] = rec
    return [by_step[step] for step in sorted(by_step)]


def _records(run):
    """``(name, records)`` of a run directory, a ``DistillResult`` or a list of records."""
    if isinstance(run, (str, Path)):
        return _run_name(run), read_log(run)
    history = getattr(run, "history", run)
    records = list(history)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), (int, np.integer)):
            raise ValueError(f"record {i} is {rec!r}; expected a dict with an integer 'step'")
    return None, sorted(records, key=lambda rec: rec["step"])


def _read_config(path):
    path = Path(path) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None


def _support_arrays(run):
    """``(x_support, y_support, labels, config)`` of a run directory or a mapping of arrays."""
    if not isinstance(run, (str, Path)):
        missing = [k for k in ("x_support", "y_support") if k not in run]
        if missing:
            raise ValueError(f"run lacks {missing}; expected a run directory or a mapping "
                             f"with x_support, y_support and labels")
        labels = run.get("labels")
        return run["x_support"], run["y_support"], labels, {"dataset": run.get("dataset")}
    path = _run_dir(run)
    config = _read_config(path)
    if (path / "distilled.npz").is_file():
        arrays, _ = io.load_checkpoint(path / "distilled.npz")
        return arrays["x_support"], arrays["y_support"], arrays.get("labels"), config
    if (path / "checkpoint.npz").is_file():  # a run in progress
        arrays, _ = io.load_checkpoint(path / "checkpoint.npz")
        if "param/x_support" in arrays and "param/y_support" in arrays:
            return arrays["param/x_support"], arrays["param/y_support"], None, config
    raise ValueError(f"{str(path)!r} holds neither distilled.npz nor a checkpoint.npz with the "
                     f"support set")


def _dataset_meta(config):
    """``(image_shape, class_names)`` of the run's dataset; ``None`` where unknown."""
    name = config.get("dataset")
    if name in _KNOWN:
        return _KNOWN[name]
    if name is None:
        return None, None
    try:
        ds = load_dataset(name, config.get("data_dir"))
    except (ValueError, FileNotFoundError, OSError):
        return None, None
    return ds.image_shape, ds.class_names


# ----------------------------------------------------------------------------- curves

def _series(records, key, xkey):
    xs, ys = [], []
    for rec in records:
        if key not in rec or rec[key] is None:
            continue
        x = rec.get(xkey)
        if x is None and rec["step"] == 0 and xkey != "step":
            x = 0.0  # the step-0 evaluation precedes any optimisation
        if x is None:
            continue
        xs.append(float(x))
        ys.append(float(rec[key]))
    return np.array(xs), np.array(ys)


def learning_curves(runs, *, names=None, x=("steps", "time"), time_unit="auto", path=None,
                    dpi=100, figsize=None):
    """Test accuracy and loss of one or several runs, against steps and time.

    Parameters
    ----------
    runs : run directory, list of records, ``DistillResult``, or a sequence of these
        Each run is a directory written by ``kernelkip distill`` (its ``log.jsonl`` is read),
        or the records themselves (``DistillResult.history``). All runs share the axes.
    names : sequence of str, optional
        Legend names; default the run directories' names (``run 0``, ... for records).
    x : sequence of {"steps", "time", "cpu"}
        One column per entry: step number, optimisation wall time, or CPU time (all threads;
        ``cpu_time`` in the log).
    time_unit : {"auto", "s", "min"}
        ``"auto"`` uses minutes when the longest time exceeds 10 minutes.
    path : str or path, optional
        Save the figure here (format from the suffix).
    dpi : float
    figsize : (float, float), optional
        Default 4.2 x 3.2 inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes`` is the accuracy row then the loss row, one column per ``x`` (for one
        ``x``, the accuracy and loss panels side by side, in that order). In the
        accuracy panels each run has a solid line (its name in the legend) of ``test_acc``,
        a dashed one of ``val_acc`` and a dotted one of ``test_acc_rf`` when the log holds them;
        the loss panels have one line per run, in the same colour.

    Raises
    ------
    ValueError
        A run that cannot be read (see :func:`read_log`) or holds no evaluation yet, an
        unknown ``x`` or ``time_unit``, or as many ``names`` as runs.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    support_grid : the distilled images.

    Examples
    --------
    >>> fig = learning_curves(["runs/a", "runs/b"], x=("steps", "cpu"))  # doctest: +SKIP
    """
    if isinstance(runs, (str, Path)) or hasattr(runs, "history") or (
            isinstance(runs, (list, tuple)) and runs and isinstance(runs[0], dict)):
        runs = [runs]
    x = (x,) if isinstance(x, str) else tuple(x)
    bad = [v for v in x if v not in X_AXES]
    if bad or not x:
        raise ValueError(f"x={bad or x!r}; expected some of {tuple(X_AXES)}")
    if time_unit not in ("auto", "s", "min"):
        raise ValueError(f"unknown time_unit {time_unit!r}; expected 'auto', 's' or 'min'")
    loaded = [_records(run) for run in runs]
    if not loaded:
        raise ValueError("no runs to plot")
    if names is None:
        names = [name if name is not None else f"run {i}" for i, (name, _) in enumerate(loaded)]
    names = list(names)
    if len(names) != len(loaded):
        raise ValueError(f"{len(names)} names for {len(loaded)} runs")
    for name, (_, records) in zip(names, loaded):
        if not any("test_acc" in rec for rec in records):
            raise ValueError(f"run {name!r} holds no evaluation yet (no record with test_acc "
                             f"in {len(records)} records)")
    longest = max((rec.get(X_AXES[v][0]) or 0.0 for v in x if v != "steps"
                   for _, records in loaded for rec in records), default=0.0)
    unit = time_unit if time_unit != "auto" else ("min" if longest > 600 else "s")
    per_unit = 60.0 if unit == "min" else 1.0

    plt = _deps.get_pyplot()
    ncol = len(x)
    if ncol == 1:  # one x axis: accuracy and loss side by side
        fig, axes = plt.subplots(1, 2, layout="constrained", figsize=figsize or (8.4, 3.2),
                                 dpi=dpi)
        axes = axes.reshape(2, 1)
    else:
        fig, axes = plt.subplots(2, ncol, squeeze=False, layout="constrained",
                                 figsize=figsize or (4.2 * ncol, 6.4), dpi=dpi)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    all_losses = []
    for i, (name, (_, records)) in enumerate(zip(names, loaded)):
        color = colors[i % len(colors)]
        for col, which in enumerate(x):
            xkey, _ = X_AXES[which]
            scale = 1.0 if which == "steps" else per_unit
            acc, loss = axes[0, col], axes[1, col]
            for key, style, suffix in (("test_acc", "-", ""), ("val_acc", "--", ": validation"),
                                       ("test_acc_rf", ":", ": RF kernel")):
                xs, ys = _series(records, key, xkey)
                if key == "test_acc" or len(xs):
                    acc.plot(xs / scale, ys, style, color=color, marker="o", markersize=3,
                             label=name + suffix)
            xs, ys = _series(records, "loss", xkey)
            loss.plot(xs / scale, ys, "-", color=color, linewidth=1, label=name)
            all_losses.append(ys)
    for col, which in enumerate(x):
        label = X_AXES[which][1].format(unit=unit)
        axes[0, col].set_ylabel("KRR test accuracy")
        axes[0, col].yaxis.set_major_formatter(lambda v, pos: f"{100 * v:.0f}%")
        axes[1, col].set_ylabel("loss (target batch)")
        axes[1, col].set_xlabel(label)
        axes[0, col].set_xlabel(label)
        losses = np.concatenate(all_losses) if all_losses else np.array([])
        if losses.size and np.all(losses > 0):
            axes[1, col].set_yscale("log")
        for ax in axes[:, col]:
            ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# ----------------------------------------------------------------------------- support set

def _as_images(x, image_shape, dataset):
    x = np.asarray(x)
    if x.ndim == 2:  # FC runs may hold flat vectors
        if image_shape is None:
            raise ValueError(f"x_support holds flat vectors of length {x.shape[1]} and the "
                             f"image shape of dataset {dataset!r} is unknown; pass "
                             f"image_shape=(H, W, C)")
        image_shape = tuple(int(s) for s in image_shape)
        if int(np.prod(image_shape)) != x.shape[1]:
            raise ValueError(f"x_support holds vectors of length {x.shape[1]}; they do not "
                             f"reshape to images of shape {image_shape}")
        x = x.reshape((x.shape[0],) + image_shape)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"x_support has shape {x.shape}; expected (n, H, W, 1|3) images or "
                         f"(n, d) vectors")
    return x


def _scaled(img, lo, hi):
    span = hi - lo if hi > lo else 1.0
    return np.clip((img - lo) / span, 0.0, 1.0)


def support_grid(run, *, class_names=None, image_shape=None, max_per_class=20,
                 scale="per-image", path=None, dpi=100, cell=0.8):
    """The distilled images as a grid: one row per class, each image under its learned label.

    Parameters
    ----------
    run : str or path, or mapping
        A run directory (``distilled.npz``; while the run is in progress, ``checkpoint.npz``),
        or a mapping with ``x_support``, ``y_support`` and optionally ``labels`` and
        ``dataset``.
    class_names : sequence of str, optional
        Default: the dataset's (``config.json``), else the class numbers.
    image_shape : (H, W, C), optional
        Shape of flat support vectors (FC runs); default the dataset's (digits are 8x8x1).
    max_per_class : int, optional
        Columns shown; ``None`` shows every image.
    scale : {"per-image", "global"}
        Min-max scaling of each image, or of all together, to the display range.
    path : str or path, optional
        Save the figure here.
    dpi : float
    cell : float
        Inches per image.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per shown image, row-major (``fig.axes``, after the hidden empty cells of
        classes with fewer images). The first axes of each row has the class name as its
        y-label; each image carries one text, the name of the argmax of its learned label,
        red and bold (with a red frame) when it differs from the image's original class.

    Raises
    ------
    ValueError
        If the run holds no support set, labels and images disagree in length, or flat
        vectors have no known image shape.
    ImportError
        If matplotlib is not installed.

    Notes
    -----
    The original classes are ``labels`` in ``distilled.npz``. A checkpoint does not store
    them; the command's class-balanced initial set is grouped by class (class 0 first), so
    they are ``repeat(arange(C), n // C)`` there.

    Examples
    --------
    >>> fig = support_grid("runs/digits", path="support.png")  # doctest: +SKIP
    """
    if scale not in ("per-image", "global"):
        raise ValueError(f"unknown scale {scale!r}; expected 'per-image' or 'global'")
    x, y, labels, config = _support_arrays(run)
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y_support has shape {y.shape}; expected (n, num_classes)")
    meta_shape, meta_names = (None, None)
    if (image_shape is None and np.ndim(x) == 2) or class_names is None:
        meta_shape, meta_names = _dataset_meta(config)
    x = _as_images(x, image_shape if image_shape is not None else meta_shape,
                   config.get("dataset"))
    n, num_classes = y.shape
    if labels is None:
        if n % num_classes:
            raise ValueError(f"the run stores no original classes and {n} images are not "
                             f"{num_classes} equal classes")
        labels = np.repeat(np.arange(num_classes), n // num_classes)
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (n,) or x.shape[0] != n:
        raise ValueError(f"x_support has {x.shape[0]} images, y_support {n} rows and labels "
                         f"shape {labels.shape}; they must agree")
    names = class_names if class_names is not None else meta_names
    names = [str(c) for c in (names if names is not None else range(num_classes))]
    if len(names) < num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    predicted = np.argmax(y, axis=1)
    classes = np.unique(labels)
    rows = [np.flatnonzero(labels == c) for c in classes]
    ncol = max(len(r) for r in rows)
    shown = ncol if max_per_class is None else min(ncol, int(max_per_class))
    lo, hi = (x.min(), x.max()) if scale == "global" else (None, None)

    plt = _deps.get_pyplot()
    label_in = 0.25 + 0.065 * max(len(names[c]) for c in classes)  # room for the row names
    width, height = cell * shown + label_in + 0.1, 1.2 * cell * len(classes) + 0.8
    fig, axes = plt.subplots(len(classes), shown, squeeze=False, figsize=(width, height), dpi=dpi)
    fig.subplots_adjust(left=label_in / width, right=1 - 0.1 / width, bottom=0.1 / height,
                        top=1 - 0.7 / height, wspace=0.08, hspace=0.45)
    for r, (cls, idx) in enumerate(zip(classes, rows)):
        for col in range(shown):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(idx):
                ax.set_visible(False)
                continue
            i = idx[col]
            img = x[i].astype(np.float64)
            img = _scaled(img, *((img.min(), img.max()) if lo is None else (lo, hi)))
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            differs = predicted[i] != cls
            color = "red" if differs else "black"
            ax.text(0.5, -0.04, names[predicted[i]], transform=ax.transAxes, ha="center",
                    va="top", fontsize=6, color=color, fontweight="bold" if differs else "normal")
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2.0 if differs else 0.5)
        axes[r, 0].set_ylabel(names[cls], rotation=0, ha="right", va="center", fontsize=8)
    title = _run_name(run) if isinstance(run, (str, Path)) else "support set"
    more = f"; first {shown} of {ncol} per class" if shown < ncol else ""
    # two short lines: a narrow grid (few images per class) must not clip the title
    fig.suptitle(f"{title}\n{n} distilled images{more}\nunder each: argmax of its learned label "
                 f"(red: not its class)", fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# ----------------------------------------------------------------------------- files

def _unique_names(paths):
    names = [_run_name(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    names = ["-".join(Path(p).resolve().parts[-2:]) if names.count(name) > 1 else name
             for p, name in zip(paths, names)]
    if len(set(names)) == len(names):
        return names
    return [f"{name}-{i}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def write_run_figures(runs, out=None, *, x=("steps", "time"), support=True, max_per_class=20,
                      dpi=100):
    """Write ``curves.png`` and ``support-<run>.png`` for run directories (``kernelkip plot``).

    Parameters
    ----------
    runs : sequence of str or path
        Run directories.
    out : str or path, optional
        A directory (created if needed) for ``curves.png`` and ``support-<run>.png``; or a
        file name with a suffix (``curves.pdf``), used for the curves, with the support grids
        beside it in the same format. Default: the run directory when there is one run; with
        several runs it must be given.
    x, max_per_class, dpi
        As in :func:`learning_curves` and :func:`support_grid`.
    support : bool
        Also draw the support grids.

    Returns
    -------
    dict
        ``{"curves": path, "support": [paths]}``.

    Raises
    ------
    ValueError
        No runs, several runs without ``out``, or a run that cannot be read.
    ImportError
        If matplotlib is not installed.
    """
    runs = [Path(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]
    if not runs:
        raise ValueError("no runs to plot")
    if out is None and len(runs) > 1:
        raise ValueError(f"{len(runs)} runs: pass --out DIR (or --out FILE.png for the "
                         f"curves) to say where the figures go")
    for run in runs:  # every run is read before a file is written
        read_log(run)
        if support:
            _support_arrays(run)
    out = runs[0] if out is None else out
    out = Path(out)
    if out.suffix and not out.is_dir():
        folder, curves, ext = out.parent, out, out.suffix
    else:
        folder, ext = out, ".png"
        curves = folder / f"curves{ext}"
    folder.mkdir(parents=True, exist_ok=True)
    plt = _deps.get_pyplot()
    names = _unique_names(runs)
    written = {"curves": str(curves), "support": []}
    fig = learning_curves(runs, names=names, x=x, dpi=dpi)
    try:
        fig.savefig(curves, dpi=dpi)
    finally:
        plt.close(fig)
    if support:
        for run, name in zip(runs, names):
            target = folder / f"support-{name}{ext}"
            fig = support_grid(run, max_per_class=max_per_class, dpi=dpi)
            try:
                fig.savefig(target, dpi=dpi)
            finally:
                plt.close(fig)
            written["support"].append(str(target))
    return written

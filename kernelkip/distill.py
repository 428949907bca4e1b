"""The one outer loop of every distillation method.

``distill(objective, params0, sampler, ...)`` moves the learned parameters (support images,
optionally labels, ...) with an optimizer against target batches drawn by ``sampler``. It logs,
evaluates, checkpoints and resumes. The objective supplies the maths; see
``kernelkip.objectives``.
"""
import json
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from . import io, optim
from ._progress import Progress
from .data import class_balanced_sample

__all__ = ["TargetSampler", "DistillResult", "EarlyStopping", "distill"]


class TargetSampler:
    """Draws target batches ``(x, y)`` from a training set, class-balanced by default.

    Parameters
    ----------
    x : ndarray of shape (n, ...)
    y : ndarray of shape (n, k)
        Regression targets (e.g. one-hot minus 1/C).
    labels : ndarray of int, shape (n,)
        Class labels, used for balancing.
    batch_size : int
        Rows per batch; with ``class_balanced`` it is split evenly over the classes (rounded
        down). A batch size at least ``n`` gives the whole set every step.
    class_balanced : bool

    Examples
    --------
    >>> import numpy as np
    >>> s = TargetSampler(np.zeros((6, 2)), np.zeros((6, 3)), np.array([0, 1, 2] * 2), 3)
    >>> s(np.random.default_rng(0))[0].shape
    (3, 2)
    """

    def __init__(self, x, y, labels, batch_size, class_balanced=True):
        self.x, self.y, self.labels = x, y, np.asarray(labels)
        if len(x) != len(y) or len(x) != len(self.labels):
            raise ValueError(f"x, y and labels have {len(x)}, {len(y)} and {len(self.labels)} "
                             f"rows; they must match")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.class_balanced = bool(class_balanced)
        self.num_classes = int(self.labels.max()) + 1

    def __call__(self, rng):
        n = len(self.x)
        if self.batch_size >= n:
            return self.x, self.y
        if self.class_balanced:
            per_class = max(1, self.batch_size // self.num_classes)
            idx = class_balanced_sample(self.labels, per_class, rng, self.num_classes)
        else:
            idx = np.sort(rng.choice(n, self.batch_size, replace=False))
        return self.x[idx], self.y[idx]


@dataclass
class DistillResult:
    """What :func:`distill` returns; fields are also reachable as keys (like ``OptimizeResult``).

    Attributes
    ----------
    params : dict of ndarray
        Final parameters (``x_support``, ``y_support``, ...).
    history : list of dict
        One record per step (``step, loss, time, ...`` and evaluation results where run).
    nit : int
        Steps done in total (including those before a resume).
    elapsed : float
        Seconds of optimisation, summed over resumed runs.
    resumed_from : int
        The step a checkpoint restored, or 0.
    """

    params: dict
    history: list = field(default_factory=list)
    nit: int = 0
    elapsed: float = 0.0
    resumed_from: int = 0

    @property
    def x_support(self):
        return self.params["x_support"]

    @property
    def y_support(self):
        return self.params.get("y_support")

    def __getitem__(self, key):
        return getattr(self, key)


class EarlyStopping:
    """A ``callback`` for :func:`distill`: stop when ``metric`` (higher is better) has not
    improved for ``patience`` evaluations, and keep the best parameters.

    The state is rebuilt from the run's history on resume (pass ``history=`` the restored
    records) and the best parameters can be written to ``path`` (``.npz``) whenever they
    improve, so an interrupted run keeps them.

    Examples
    --------
    >>> stop = EarlyStopping("val_acc", patience=2)
    >>> [stop(s, {"x": s}, {"val_acc": a}) for s, a in enumerate([0.5, 0.6, 0.55, 0.58])]
    [False, False, False, True]
    >>> stop.best_step, int(stop.best_params["x"])
    (1, 1)
    """

    def __init__(self, metric, patience, path=None, history=()):
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        self.metric, self.patience, self.path = metric, int(patience), path
        self.best, self.best_step, self.best_params, self.bad = -np.inf, None, None, 0
        for rec in history:
            if metric in rec:
                self._see(rec["step"], None, rec[metric])
        if path is not None and os.path.exists(path):
            arrays, _ = io.load_checkpoint(path)
            self.best_params = dict(arrays)

    def _see(self, step, params, value):
        if value > self.best:
            self.best, self.best_step, self.bad = value, step, 0
            if params is not None:
                self.best_params = {k: np.array(v, copy=True) for k, v in params.items()}
                if self.path is not None:
                    io.save_checkpoint(self.path, self.best_params,
                                       {"step": step, self.metric: value})
            return False
        self.bad += 1
        return self.bad >= self.patience

    def __call__(self, step, params, record):
        if self.metric not in record:
            return False
        return self._see(step, params, record[self.metric])


class _Interrupt(Exception):
    pass


def _objective_meta(objective):
    return objective.to_dict() if hasattr(objective, "to_dict") else repr(objective)


def distill(objective, params0, sampler, *, steps, optimizer=None, learn=None, rng=None,
            evaluate=None, eval_every=0, checkpoint=None, checkpoint_every=50, log=None,
            progress=True, callback=None, max_seconds=None, eval_every_seconds=None,
            clock="wall"):
    """Distill: optimise ``params`` so that the objective on sampled target batches falls.

    Parameters
    ----------
    objective : callable
        ``objective(params, batch) -> (loss, grads, info)``, e.g. ``kernelkip.objectives.kip``.
        If ``objective.needs_rng`` is true it is called with ``rng=rng`` too (after the batch
        is drawn), so its random draws are checkpointed with the run.
    params0 : dict of ndarray
        Initial parameters, e.g. ``{"x_support": ..., "y_support": ...}``.
    sampler : callable
        ``sampler(rng) -> batch``, e.g. :class:`TargetSampler`.
    steps : int
        Total number of steps (a resumed run continues up to this number).
    optimizer : kernelkip.optim.Optimizer, optional
        Default ``optim.adam(0.01)``.
    learn : sequence of str, optional
        Names of the parameters to update; the others stay fixed. Default: all of them.
    rng : numpy.random.Generator, optional
        Draws the target batches. Default ``np.random.default_rng(0)``. Its state is
        checkpointed, so a resumed run draws the same batches as an uninterrupted one.
    evaluate : callable, optional
        ``evaluate(params) -> dict`` of scalars, run every ``eval_every`` steps, at step 0 and
        at the end.
    eval_every : int
        0 evaluates only at the start and the end.
    checkpoint : str or path, optional
        ``.npz`` path. If it exists the run resumes from it (the objective and parameter shapes
        must match). Written atomically every ``checkpoint_every`` steps, at the end, and when
        the run is interrupted (Ctrl-C / SIGTERM), so an interrupted run loses nothing.
    checkpoint_every : int
    log : str or path, optional
        JSON-lines file: one record per step, appended across resumes.
    progress : bool
        Progress bar on stderr.
    max_seconds : float, optional
        Budget of optimisation time (evaluation excluded): the run stops after the step that
        reaches it, even before ``steps``. Counted across resumptions.
    eval_every_seconds : float, optional
        Also evaluate each time the optimisation time passes a multiple of this.
    clock : {"wall", "cpu"}
        What ``max_seconds`` and ``eval_every_seconds`` count: wall time, or the CPU time of
        this process (all its threads; on a shared machine, what the run itself used). Both
        are logged (``time``, ``cpu_time``).
    callback : callable, optional
        ``callback(step, params, record)`` after each step; returning ``True`` stops early.

    Returns
    -------
    DistillResult

    Raises
    ------
    ValueError
        Bad arguments, or a checkpoint written by a different objective or parameter shapes.
    KeyboardInterrupt
        Re-raised after the checkpoint is written.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rng = np.random.default_rng(0)
    >>> x, labels = rng.normal(size=(40, 5)), np.arange(40) % 2
    >>> y = np.eye(2)[labels] - 0.5
    >>> res = kk.distill(kk.objectives.kip(kk.FC(depth=1)),
    ...                  {"x_support": x[:4].copy(), "y_support": y[:4].copy()},
    ...                  kk.TargetSampler(x, y, labels, 20), steps=3, progress=False)
    >>> res.nit, res.x_support.shape
    (3, (4, 5))
    """
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    steps = int(steps)
    params = {name: np.array(value, copy=True) for name, value in params0.items()}
    learn = tuple(params) if learn is None else tuple(learn)
    for name in learn:
        if name not in params:
            raise ValueError(f"cannot learn {name!r}: params have {sorted(params)}")
    optimizer = optim.adam(0.01) if optimizer is None else optimizer
    rng = np.random.default_rng(0) if rng is None else rng
    opt_state = optimizer.init({name: params[name] for name in learn})
    meta = {"objective": _objective_meta(objective), "learn": list(learn),
            "shapes": {name: list(value.shape) for name, value in params.items()}}
    if clock not in ("wall", "cpu"):
        raise ValueError(f"unknown clock {clock!r}; expected 'wall' or 'cpu'")
    step, history, elapsed, cpu_elapsed, resumed_from = 0, [], 0.0, 0.0, 0

    if checkpoint is not None and os.path.exists(checkpoint):
        arrays, saved_meta = io.load_checkpoint(checkpoint)
        for key in ("objective", "learn", "shapes"):
            if json.loads(json.dumps(saved_meta.get(key))) != json.loads(json.dumps(meta[key])):
                raise ValueError(f"checkpoint {checkpoint} was written with a different {key} "
                                 f"({saved_meta.get(key)!r} vs {meta[key]!r}); use another path "
                                 f"or delete it to start afresh")
        params = {name: arrays["param/" + name] for name in params}
        opt_state = optim.state_from_arrays({k[4:]: v for k, v in arrays.items()
                                             if k.startswith("opt/")})
        rng.bit_generator.state = io.rng_from_json(saved_meta["rng"]).bit_generator.state
        step, elapsed, history = saved_meta["step"], saved_meta["elapsed"], saved_meta["history"]
        cpu_elapsed = saved_meta.get("cpu_elapsed", 0.0)
        resumed_from = step

    # the generator's state at the last step boundary: an interrupted step has already drawn
    # its batch, and a resumed run must draw that batch again
    rng_at_step = io.rng_state_to_json(rng)

    def save():
        if checkpoint is None:
            return
        arrays = {"param/" + name: value for name, value in params.items()}
        arrays.update({"opt/" + k: v for k, v in optim.state_to_arrays(opt_state).items()})
        io.save_checkpoint(checkpoint, arrays, dict(meta, step=step, elapsed=elapsed,
                                                    cpu_elapsed=cpu_elapsed, history=history,
                                                    rng=rng_at_step))

    logger = io.JsonlLogger(log, append=True) if log is not None else None

    def record(rec):
        history.append(rec)
        if logger is not None:
            logger.log(**rec)

    def handler(signum, frame):
        raise _Interrupt()

    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: Ctrl-C handling still applies
        pass
    interrupted = None
    try:
        if evaluate is not None and step == 0:
            record({"step": 0, "time": elapsed, **evaluate(params)})

        def spent():
            return cpu_elapsed if clock == "cpu" else elapsed

        def out_of_time():
            return max_seconds is not None and spent() >= max_seconds

        next_eval = None
        if eval_every_seconds:
            next_eval = (spent() // eval_every_seconds + 1) * eval_every_seconds
        with Progress(steps, desc="distill", initial=step, disable=not progress) as bar:
            while step < steps and not out_of_time():
                t0, c0 = time.perf_counter(), time.process_time()
                batch = sampler(rng)
                if getattr(objective, "needs_rng", False):
                    loss, grads, info = objective(params, batch, rng=rng)
                else:
                    loss, grads, info = objective(params, batch)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"the loss is {loss} at step {step}; lower the "
                                             f"learning rate or raise reg")
                learned = {name: params[name] for name in learn}
                new, new_state = optimizer.update({name: grads[name] for name in learn},
                                                  opt_state, learned)
                # one assignment, so an interrupt leaves a consistent (params, state, step, rng)
                rng_state_json = io.rng_state_to_json(rng)
                params, opt_state, step, rng_at_step = ({**params, **new}, new_state, step + 1,
                                                        rng_state_json)
                elapsed += time.perf_counter() - t0
                cpu_elapsed += time.process_time() - c0
                rec = {"step": step, "loss": float(loss), "time": elapsed,
                       "cpu_time": cpu_elapsed, **info}
                timed = next_eval is not None and spent() >= next_eval
                if timed:
                    next_eval = (spent() // eval_every_seconds + 1) * eval_every_seconds
                if evaluate is not None and ((eval_every and step % eval_every == 0)
                                             or step == steps or out_of_time() or timed):
                    rec.update(evaluate(params))
                record(rec)
                bar.update(1, loss=f"{loss:.4g}")
                if checkpoint_every and step % checkpoint_every == 0:
                    save()
                if callback is not None and callback(step, params, rec):
                    break
    except (KeyboardInterrupt, _Interrupt) as err:
        interrupted = err
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    save()
    if interrupted is not None:
        raise KeyboardInterrupt(f"interrupted at step {step}; checkpoint saved to "
                                f"{checkpoint}") from None
    return DistillResult(params, history, step, elapsed, resumed_from)

"""The one outer loop of every distillation method.

``distill(objective, params0, sampler, ...)`` moves the learned parameters (support images,
optionally labels, ...) with an optimizer against target batches drawn by ``sampler``. It logs,
evaluates, checkpoints and resumes. The objective supplies the maths; see
``kernelkip.objectives``.
"""
import json
import numbers
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from . import io, optim
from ._progress import progress_bar
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

    Its state (the best value, its step, the best parameters) is saved in :func:`distill`'s
    checkpoint, and restored from it on resume, so a resumed run stops where an uninterrupted
    one would and keeps the same best set. The best parameters can also be written to
    ``path`` (``.npz``) whenever they improve, for a look while the run goes on.

    Examples
    --------
    >>> stop = EarlyStopping("val_acc", patience=2)
    >>> [stop(s, {"x": s}, {"val_acc": a}) for s, a in enumerate([0.5, 0.6, 0.55, 0.58])]
    [False, False, False, True]
    >>> stop.best_step, int(stop.best_params["x"])
    (1, 1)
    """

    def __init__(self, metric, patience, path=None):
        if isinstance(patience, bool) or int(patience) != patience or int(patience) < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        self.metric, self.patience, self.path = metric, int(patience), path
        self.best, self.best_step, self.best_params, self.bad = -np.inf, None, None, 0

    def _see(self, step, params, value):
        if value > self.best:
            self.best, self.best_step, self.bad = value, step, 0
            self.best_params = {k: np.array(v, copy=True) for k, v in params.items()}
            self._write()
            return False
        self.bad += 1
        return self.bad >= self.patience

    def _write(self):
        if self.path is not None and self.best_params is not None:
            io.save_checkpoint(self.path, self.best_params,
                               {"step": self.best_step, self.metric: self.best})

    def __call__(self, step, params, record):
        if self.metric not in record:
            return False
        return self._see(step, params, record[self.metric])

    def state_dict(self):
        """``(arrays, meta)`` to checkpoint with the run."""
        return (dict(self.best_params or {}),
                {"best": None if self.best_step is None else float(self.best),
                 "best_step": self.best_step, "bad": self.bad})

    def load_state_dict(self, arrays, meta):
        """Restore what :meth:`state_dict` gave (and rewrite ``path`` to match it)."""
        self.best_step, self.bad = meta["best_step"], int(meta["bad"])
        self.best = -np.inf if meta["best"] is None else meta["best"]
        self.best_params = dict(arrays) if self.best_step is not None else None
        self._write()


class _Interrupt(Exception):
    pass


def _count(value, name):
    """``value`` as an int >= 0; a fractional or negative count is an error, not rounded."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)) or \
            (isinstance(value, float) and not value.is_integer()) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def _consistent_log(log, step):
    """The records of ``log`` for steps ``0..step``, one per step (the first of repeats)."""
    if not os.path.exists(log):
        raise ValueError(f"the checkpoint is at step {step} but its log {log} is missing; "
                         f"delete the checkpoint to start afresh")
    seen, kept = set(), []
    for rec in io.read_jsonl(log, skip_partial=True):
        s = rec.get("step")
        if isinstance(s, int) and s <= step and s not in seen:
            seen.add(s)
            kept.append(rec)
    if not all(s in seen for s in range(1, step + 1)):
        lost = [s for s in range(1, step + 1) if s not in seen]
        raise ValueError(f"the log {log} lacks the records of steps {lost[:5]}"
                         f"{'...' if len(lost) > 5 else ''} that the checkpoint (step {step}) "
                         f"has done; delete both to start afresh")
    return sorted(kept, key=lambda r: r["step"])


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
        0 checkpoints only at the end (and on an interrupt).
    log : str or path, optional
        JSON-lines file: one record per step. A fresh run (no checkpoint) starts it empty; a
        resumed run first cuts it back to the checkpoint's step (records of later steps, left
        by a killed process, are dropped and the steps redone), so it always holds exactly one
        record per step done. With a log, the checkpoint does not repeat the history, and its
        cost does not grow with the number of steps.
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
        ``callback(step, params, record)`` after the initial evaluation (step 0) and after
        each step; returning ``True`` stops early. If it has ``state_dict()`` and
        ``load_state_dict(arrays, meta)`` (like :class:`EarlyStopping`), its state is
        checkpointed and restored with the run.

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
    steps = _count(steps, "steps")
    eval_every = _count(eval_every, "eval_every")
    checkpoint_every = _count(checkpoint_every, "checkpoint_every")
    for name, value in (("max_seconds", max_seconds), ("eval_every_seconds", eval_every_seconds)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    params = {name: np.array(value, copy=True) for name, value in params0.items()}
    learn = tuple(params) if learn is None else tuple(learn)
    for name in learn:
        if name not in params:
            raise ValueError(f"cannot learn {name!r}: params have {sorted(params)}")
        if params[name].dtype.kind != "f":
            raise ValueError(f"cannot learn {name!r}: it has dtype {params[name].dtype}, and the "
                             f"optimizer's updates would be cast away; pass it as float32 or "
                             f"float64")
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
        missing = [k for k in ("step", "elapsed", "rng", "objective", "learn", "shapes")
                   if k not in saved_meta]
        if missing:
            raise ValueError(f"checkpoint {checkpoint} lacks {', '.join(missing)}: it was not "
                             f"written by kernelkip.distill; delete it to start afresh")
        for key in ("objective", "learn", "shapes"):
            if json.loads(json.dumps(saved_meta.get(key))) != json.loads(json.dumps(meta[key])):
                raise ValueError(f"checkpoint {checkpoint} was written with a different {key} "
                                 f"({saved_meta.get(key)!r} vs {meta[key]!r}); use another path "
                                 f"or delete it to start afresh")
        absent = [name for name in params if "param/" + name not in arrays]
        if absent:
            raise ValueError(f"checkpoint {checkpoint} lacks the parameters {absent}; delete it "
                             f"to start afresh")
        params = {name: arrays["param/" + name] for name in params}
        opt_state = optim.state_from_arrays({k[4:]: v for k, v in arrays.items()
                                             if k.startswith("opt/")})
        try:
            rng.bit_generator.state = io.rng_from_json(saved_meta["rng"]).bit_generator.state
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ValueError(f"checkpoint {checkpoint} has an unreadable generator state; "
                             f"delete it to start afresh") from None
        step, elapsed = int(saved_meta["step"]), saved_meta["elapsed"]
        cpu_elapsed = saved_meta.get("cpu_elapsed", 0.0)
        resumed_from = step
        if callback is not None and hasattr(callback, "load_state_dict") \
                and "callback" in saved_meta:
            callback.load_state_dict({k[3:]: v for k, v in arrays.items()
                                      if k.startswith("cb/")}, saved_meta["callback"])
        if log is None:
            history = saved_meta.get("history", [])
    if log is not None:
        # the log holds exactly one record per step the checkpoint has done: records of steps
        # done after it (the process was killed) are dropped, and they are redone
        history = _consistent_log(log, step) if step else []
        io.trim_jsonl(log, history)

    # the generator's state at the last step boundary: an interrupted step has already drawn
    # its batch, and a resumed run must draw that batch again
    rng_at_step = io.rng_state_to_json(rng)

    def save():
        if checkpoint is None:
            return
        arrays = {"param/" + name: value for name, value in params.items()}
        arrays.update({"opt/" + k: v for k, v in optim.state_to_arrays(opt_state).items()})
        extra = {}
        if callback is not None and hasattr(callback, "state_dict"):
            cb_arrays, extra["callback"] = callback.state_dict()
            arrays.update({"cb/" + k: v for k, v in cb_arrays.items()})
        if log is None:
            # without a log the checkpoint must carry the history; with one, it does not, so a
            # checkpoint costs the same at step 10 and at step 10000
            extra["history"] = history
        io.save_checkpoint(checkpoint, arrays, dict(meta, step=step, elapsed=elapsed,
                                                    cpu_elapsed=cpu_elapsed, rng=rng_at_step,
                                                    **extra))

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
            rec = {"step": 0, "time": elapsed, **evaluate(params)}
            record(rec)
            if callback is not None:
                callback(0, params, rec)  # the initial set is a candidate too

        def spent():
            return cpu_elapsed if clock == "cpu" else elapsed

        def out_of_time():
            return max_seconds is not None and spent() >= max_seconds

        next_eval = None
        if eval_every_seconds:
            next_eval = (spent() // eval_every_seconds + 1) * eval_every_seconds
        with progress_bar(steps, "distill", initial=step, disable=not progress) as bar:
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
                new_params = {**params, **new}
                new_elapsed = elapsed + time.perf_counter() - t0
                new_cpu = cpu_elapsed + time.process_time() - c0
                rec = {"step": step + 1, "loss": float(loss), "time": new_elapsed,
                       "cpu_time": new_cpu, **info}
                spent_now = new_cpu if clock == "cpu" else new_elapsed
                timed = next_eval is not None and spent_now >= next_eval
                if evaluate is not None and ((eval_every and (step + 1) % eval_every == 0)
                                             or step + 1 == steps or timed
                                             or (max_seconds is not None
                                                 and spent_now >= max_seconds)):
                    rec.update(evaluate(new_params))
                # the step is committed only once its record is written: an interrupt before
                # this point leaves (params, state, step, rng, time) at the previous step,
                # whose record is the log's last, and the resumed run redoes this step
                record(rec)
                params, opt_state, step = new_params, new_state, step + 1
                rng_at_step, elapsed, cpu_elapsed = io.rng_state_to_json(rng), new_elapsed, \
                    new_cpu
                if timed:
                    next_eval = (spent() // eval_every_seconds + 1) * eval_every_seconds
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                stop = callback is not None and callback(step, params, rec)
                if checkpoint_every and step % checkpoint_every == 0:
                    save()
                if stop:
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

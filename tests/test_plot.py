"""Figures of runs: the plotted data are the log's and the distilled set's, files are PNGs."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import kernelkip as kk  # noqa: E402
from kernelkip import _deps, cli, io, plot  # noqa: E402
from kernelkip.data.loaders import FASHION_MNIST_CLASSES  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    _deps.get_pyplot().close("all")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny real run of the command: digits, 2 images per class, 6 steps, 3 evaluations."""
    out = tmp_path_factory.mktemp("plot") / "digits-run"
    argv = ["distill", "--dataset", "digits", "--ipc", "2", "--steps", "6", "--lr", "0.01",
            "--target-batch", "200", "--eval-every", "3", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    return out


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _write_log(path, records):
    path.mkdir(parents=True, exist_ok=True)
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _synthetic(n_steps=8, eval_every=4, t_step=0.5, val=False, rf=False, seed=0):
    rng = np.random.default_rng(seed)
    recs = [{"step": 0, "time": 0.0, "test_acc": 0.5}]
    for step in range(1, n_steps + 1):
        rec = {"step": step, "loss": float(rng.uniform(0.1, 1.0)), "time": step * t_step,
               "cpu_time": 2 * step * t_step}
        if step % eval_every == 0:
            rec["test_acc"] = float(rng.uniform(0.5, 1.0))
            if val:
                rec["val_acc"] = float(rng.uniform(0.5, 1.0))
            if rf:
                rec["test_acc_rf"] = float(rng.uniform(0.5, 1.0))
        recs.append(rec)
    return recs


def _xy(line):
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


# ----------------------------------------------------------------------------- curves

def test_curves_of_a_real_run_plot_the_log(run_dir):
    log = _log(run_dir)
    evals = [r for r in log if "test_acc" in r]
    steps = [r for r in log if "loss" in r]
    assert len(evals) == 3 and len(steps) == 6
    fig = plot.learning_curves(run_dir)
    acc_steps, acc_time, loss_steps, loss_time = fig.axes
    for ax in fig.axes:
        assert len(ax.lines) == 1
    x, y = _xy(acc_steps.lines[0])
    np.testing.assert_array_equal(x, [r["step"] for r in evals])
    np.testing.assert_array_equal(y, [r["test_acc"] for r in evals])
    x, y = _xy(acc_time.lines[0])
    np.testing.assert_array_equal(x, [r["time"] for r in evals])
    x, y = _xy(loss_steps.lines[0])
    np.testing.assert_array_equal(x, [r["step"] for r in steps])
    np.testing.assert_array_equal(y, [r["loss"] for r in steps])
    x, _ = _xy(loss_time.lines[0])
    np.testing.assert_array_equal(x, [r["time"] for r in steps])
    assert acc_steps.lines[0].get_label() == "digits-run"
    assert [t.get_text() for t in acc_steps.get_legend().get_texts()] == ["digits-run"]
    assert "wall" in acc_time.get_xlabel() and loss_steps.get_yscale() == "log"


def test_curves_from_the_library_api(tmp_path):
    ds = kk.data.load_digits()
    x, labels = ds.x_train.reshape(len(ds.x_train), -1) / 16.0, ds.y_train
    y = np.eye(10)[labels] - 0.1
    idx = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(10)])
    arch = kk.FC(depth=1)

    def evaluate(params):
        return {"test_acc": kk.krr_accuracy(params["x_support"], params["y_support"],
                                            x[-200:], labels[-200:], arch)}

    res = kk.distill(kk.objectives.kip(arch),
                     {"x_support": x[idx].copy(), "y_support": y[idx].copy()},
                     kk.TargetSampler(x, y, labels, 100), steps=4, evaluate=evaluate,
                     eval_every=2, progress=False)
    fig = plot.learning_curves(res, x="steps", path=tmp_path / "api.png")
    acc, loss = fig.axes
    evals = [r for r in res.history if "test_acc" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    np.testing.assert_array_equal(_xy(acc.lines[0])[1], [r["test_acc"] for r in evals])
    np.testing.assert_array_equal(_xy(loss.lines[0])[1],
                                  [r["loss"] for r in res.history if "loss" in r])
    assert acc.lines[0].get_label() == "run 0"
    assert _png_size(tmp_path / "api.png") == (840, 320)  # one x: the two panels side by side


def test_several_runs_share_the_axes_with_validation_dashed_and_rf_dotted(tmp_path):
    a = _write_log(tmp_path / "a", _synthetic(val=True, rf=True, seed=1))
    b = _write_log(tmp_path / "b", _synthetic(seed=2))
    c = _write_log(tmp_path / "c", _synthetic(seed=3))
    fig = plot.learning_curves([a, b, c], x=("steps", "cpu"))
    acc_steps, acc_cpu, loss_steps, loss_cpu = fig.axes
    assert [line.get_label() for line in acc_steps.lines] == [
        "a", "a: validation", "a: RF kernel", "b", "c"]
    assert [line.get_linestyle() for line in acc_steps.lines] == ["-", "--", ":", "-", "-"]
    assert len(loss_steps.lines) == len(loss_cpu.lines) == 3
    recs = _synthetic(val=True, rf=True, seed=1)
    evals = [r for r in recs if "test_acc" in r]
    # step 0 has no cpu_time: it is placed at 0
    np.testing.assert_array_equal(_xy(acc_cpu.lines[0])[0],
                                  [r.get("cpu_time", 0.0) for r in evals])
    np.testing.assert_array_equal(_xy(acc_steps.lines[1])[1],
                                  [r["val_acc"] for r in evals if "val_acc" in r])
    np.testing.assert_array_equal(_xy(acc_steps.lines[2])[1],
                                  [r["test_acc_rf"] for r in evals if "test_acc_rf" in r])
    assert acc_steps.lines[0].get_color() == acc_steps.lines[1].get_color() \
        == loss_steps.lines[0].get_color() != acc_steps.lines[3].get_color()
    assert "CPU" in acc_cpu.get_xlabel()
    labels = [t.get_text() for t in acc_steps.get_legend().get_texts()]
    assert labels[:1] == ["a"] and "b" in labels and "c" in labels


def test_long_runs_are_plotted_in_minutes(tmp_path):
    run = _write_log(tmp_path / "long", _synthetic(t_step=200.0))
    fig = plot.learning_curves(run, x="time")
    acc = fig.axes[0]
    recs = [r for r in _synthetic(t_step=200.0) if "test_acc" in r]
    np.testing.assert_allclose(_xy(acc.lines[0])[0], [r["time"] / 60 for r in recs])
    assert "min" in acc.get_xlabel()
    fig = plot.learning_curves(run, x="time", time_unit="s")
    np.testing.assert_allclose(_xy(fig.axes[0].lines[0])[0], [r["time"] for r in recs])


def test_a_resumed_log_keeps_the_later_record_of_a_repeated_step(tmp_path):
    recs = _synthetic(n_steps=4, eval_every=2)
    again = dict(recs[3], loss=123.0)  # step 3 logged again after a resumption
    run = _write_log(tmp_path / "r", recs + [again, recs[4]])
    log = plot.read_log(run)
    assert [r["step"] for r in log] == [0, 1, 2, 3, 4] and log[3]["loss"] == 123.0


@pytest.mark.parametrize("content, message", [
    (None, "no log.jsonl"),
    ('{"step": 0, "test_acc": 0.5}\n{"step": 1, "lo', r"line 2: not a JSON record"),
    ('{"step": 0, "test_acc": 0.5}\n[1, 2]\n', r"line 2: expected a JSON object"),
    ('{"loss": 1.0}\n', r"line 1: expected a JSON object with an integer 'step'"),
    ('{"step": 1, "loss": 1.0, "time": 0.1}\n', "no evaluation yet"),
    ("", "no evaluation yet"),
])
def test_unreadable_runs_give_one_line_errors(tmp_path, content, message):
    run = tmp_path / "bad"
    run.mkdir()
    if content is not None:
        (run / "log.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        plot.learning_curves(run)
    assert "\n" not in str(err.value)


def test_bad_arguments_are_refused(tmp_path, run_dir):
    with pytest.raises(ValueError, match="not a directory"):
        plot.learning_curves(tmp_path / "missing")
    with pytest.raises(ValueError, match="expected some of"):
        plot.learning_curves(run_dir, x=("steps", "epochs"))
    with pytest.raises(ValueError, match="time_unit"):
        plot.learning_curves(run_dir, time_unit="hours")
    with pytest.raises(ValueError, match="2 names for 1 runs"):
        plot.learning_curves(run_dir, names=["a", "b"])


# ----------------------------------------------------------------------------- support grid

def test_support_grid_of_a_real_run(run_dir):
    arrays, _ = io.load_checkpoint(run_dir / "distilled.npz")
    fig = plot.support_grid(run_dir)
    axes = np.array(fig.axes).reshape(10, 2)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [str(d) for d in range(10)]
    order = np.argsort(arrays["labels"], kind="stable")
    predicted = np.argmax(arrays["y_support"], 1)[order]
    texts = [ax.texts[0].get_text() for ax in axes.ravel()]
    assert texts == [str(p) for p in predicted]
    img = arrays["x_support"][order[0], :, :, 0].astype(float)
    np.testing.assert_allclose(axes[0, 0].images[0].get_array(),
                               (img - img.min()) / (img.max() - img.min()))


def _support(x, labels, predicted, num_classes, **extra):
    y = np.full((len(labels), num_classes), -0.1)
    y[np.arange(len(labels)), predicted] = 0.9
    return {"x_support": x, "y_support": y, "labels": np.asarray(labels), **extra}


def test_a_label_that_moved_to_another_class_is_highlighted():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3)
    predicted = labels.copy()
    predicted[4] = 7  # class 1's second image now votes for 7
    fig = plot.support_grid(_support(rng.normal(size=(30, 8, 8, 1)), labels, predicted, 10,
                                     dataset="digits"))
    axes = np.array(fig.axes).reshape(10, 3)
    moved = axes[1, 1].texts[0]
    assert moved.get_text() == "7" and moved.get_color() == "red"
    assert moved.get_fontweight() == "bold"
    others = [ax.texts[0] for ax in axes.ravel() if ax is not axes[1, 1]]
    assert all(t.get_color() == "black" for t in others)
    assert [t.get_text() for t in others[:3]] == ["0", "0", "0"]


def test_flat_vectors_are_shown_as_the_datasets_images():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 8, 8, 1))
    labels = np.repeat(np.arange(10), 2)
    flat = plot.support_grid(_support(x.reshape(20, 64), labels, labels, 10, dataset="digits"))
    nhwc = plot.support_grid(_support(x, labels, labels, 10, dataset="digits"))
    assert len(flat.axes) == len(nhwc.axes) == 20
    for a, b in zip(flat.axes, nhwc.axes):
        assert a.images[0].get_array().shape == (8, 8)
        np.testing.assert_array_equal(a.images[0].get_array(), b.images[0].get_array())


def test_flat_vectors_need_a_known_image_shape():
    x = np.zeros((4, 12))
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="image_shape"):
        plot.support_grid(_support(x, labels, labels, 2))
    with pytest.raises(ValueError, match="do not reshape"):
        plot.support_grid(_support(x, labels, labels, 2), image_shape=(3, 3, 1))
    fig = plot.support_grid(_support(x, labels, labels, 2), image_shape=(2, 2, 3))
    assert fig.axes[0].images[0].get_array().shape == (2, 2, 3)


@pytest.mark.parametrize("dataset, shape, names", [
    ("fashion-mnist", (28, 28, 1), FASHION_MNIST_CLASSES),
    ("cifar10", (32, 32, 3), plot.CIFAR10_CLASSES),
])
def test_rows_are_titled_with_the_datasets_class_names(dataset, shape, names):
    rng = np.random.default_rng(2)
    labels = np.arange(10)
    predicted = (labels + 1) % 10
    fig = plot.support_grid(_support(rng.uniform(size=(10,) + shape), labels, predicted, 10,
                                     dataset=dataset))
    assert [ax.get_ylabel() for ax in fig.axes] == list(names)
    assert [ax.texts[0].get_text() for ax in fig.axes] == [names[p] for p in predicted]
    assert fig.axes[0].images[0].get_array().shape == shape[:2] + ((3,) if shape[2] == 3 else ())


def test_a_run_in_progress_is_read_from_its_checkpoint(tmp_path, run_dir):
    copy = tmp_path / "in-progress"
    shutil.copytree(run_dir, copy)
    (copy / "distilled.npz").unlink()
    arrays, _ = io.load_checkpoint(copy / "checkpoint.npz")
    fig = plot.support_grid(copy)
    axes = np.array(fig.axes).reshape(10, 2)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [str(d) for d in range(10)]
    predicted = np.argmax(arrays["param/y_support"], 1)
    assert [ax.texts[0].get_text() for ax in axes.ravel()] == [str(p) for p in predicted]
    (copy / "checkpoint.npz").unlink()
    with pytest.raises(ValueError, match="neither distilled.npz"):
        plot.support_grid(copy)


def test_max_per_class_limits_the_columns():
    labels = np.repeat(np.arange(3), 5)
    fig = plot.support_grid(_support(np.zeros((15, 4, 4, 1)), labels, labels, 3),
                            max_per_class=2)
    assert len(fig.axes) == 6 and "first 2 of 5" in fig._suptitle.get_text()


# ----------------------------------------------------------------------------- files, command

def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_command_writes_pngs_into_the_run_directory(run_dir, capsys):
    import matplotlib.image
    for name in ("curves.png", "support-digits-run.png"):
        (run_dir / name).unlink(missing_ok=True)
    assert cli.main(["plot", str(run_dir), "--dpi", "50"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {"curves": str(run_dir / "curves.png"),
                       "support": [str(run_dir / "support-digits-run.png")]}
    width, height = _png_size(run_dir / "curves.png")
    assert (width, height) == (420, 320)  # 2 x 2 panels of 4.2 x 3.2 inches at 50 dpi
    assert matplotlib.image.imread(run_dir / "support-digits-run.png").shape[0] > 0


def test_plot_command_with_several_runs_needs_out(tmp_path, run_dir, capsys):
    other = _write_log(tmp_path / "other", _synthetic())
    assert cli.main(["plot", str(run_dir), str(other)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and err.count("\n") == 1
    target = tmp_path / "figs" / "both.png"
    assert cli.main(["plot", str(run_dir), str(other), "--out", str(target), "--no-support",
                     "--x", "cpu"]) == 0
    assert _png_size(target)[0] > 0 and not list(target.parent.glob("support-*"))
    out_dir = tmp_path / "figdir"
    # the synthetic run has no support set: a one-line error
    assert cli.main(["plot", str(run_dir), str(other), "--out", str(out_dir)]) == 2
    assert "neither distilled.npz" in capsys.readouterr().err
    assert not out_dir.exists()  # nothing is written before every run has been read
    assert cli.main(["plot", str(run_dir), str(run_dir), "--out", str(out_dir)]) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names[0] == "curves.png" and len(names) == 3  # same names get distinct files


def test_missing_matplotlib_is_a_one_line_error(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(_deps._cache, "matplotlib", None)
    assert not _deps.matplotlib_available()
    with pytest.raises(ImportError, match=r"pip install kernelkip\[plot\]"):
        plot.learning_curves(run_dir)
    capsys.readouterr()
    assert cli.main(["plot", str(run_dir)]) == 2
    assert capsys.readouterr().err == ("error: kernelkip plot needs matplotlib: "
                                       "pip install kernelkip[plot]\n")

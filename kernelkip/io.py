"""Run directories (one owner at a time), checkpoints (atomic ``.npz``), JSON-lines logs, and
PNG grids of support images.

Standard library and NumPy only: the PNG encoder is a few lines of ``zlib`` and ``struct``.
"""
import datetime
import fnmatch
import json
import os
import socket
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

try:  # POSIX advisory locks; released by the kernel when the holder exits, however it exits
    import fcntl
except ImportError:  # pragma: no cover -- Windows
    fcntl = None

__all__ = ["save_checkpoint", "load_checkpoint", "read_npz", "FileFormatError",
           "write_text_atomic", "write_bytes_atomic", "rng_state_to_json", "rng_from_json",
           "JsonlLogger", "read_jsonl", "trim_jsonl", "save_image_grid", "write_png", "read_png",
           "RunDirectory", "RunDirectoryError", "RUN_FILES"]

_META = "__meta__"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


class FileFormatError(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, corrupt, other
    format)."""


def read_npz(path, what="file"):
    """All arrays of an ``.npz`` archive, read eagerly, without pickle.

    Every failure of a file that exists -- a truncated or corrupt archive, a text file, a
    pickle, object arrays -- raises :class:`FileFormatError` naming the file, instead of
    ``zipfile``/``numpy`` internals (whose advice to pass ``allow_pickle=True`` would be the
    wrong advice for a file kernelkip reads).

    Parameters
    ----------
    path : str or path
    what : str
        What the file is, for messages ("checkpoint", "dataset", ...).

    Returns
    -------
    dict of ndarray

    Raises
    ------
    FileNotFoundError
        No such file.
    FileFormatError
        The file is not a readable ``.npz`` archive.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise FileFormatError(f"{what} {str(path)!r} is a directory, not an .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise FileFormatError(f"{what} {str(path)!r} is a single .npy array, not an "
                                      f".npz archive")
            return {k: data[k] for k in data.files}
    except FileFormatError:
        raise
    except ValueError as err:
        reason = ("it holds pickled data, which kernelkip never loads" if "pickle" in str(err)
                  else f"{err}")
        raise FileFormatError(f"{what} {str(path)!r} is not a readable .npz archive: "
                              f"{reason}") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, KeyError) as err:
        raise FileFormatError(f"{what} {str(path)!r} is truncated or corrupt "
                              f"({type(err).__name__}: {err})") from None


def _atomic_write(path, write, mode):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: a reader (or a
    crash) sees the old file or the new one, never half of one."""
    _atomic_write(path, lambda f: f.write(text), "w")


def write_bytes_atomic(path, data):
    """:func:`write_text_atomic` for bytes."""
    _atomic_write(path, lambda f: f.write(data), "wb")


def save_checkpoint(path, arrays, meta=None):
    """Write ``arrays`` and a JSON ``meta`` dict to an ``.npz``, atomically.

    The file is written next to ``path`` under a temporary name and moved into place with
    ``os.replace``, so a crash mid-write leaves the previous checkpoint intact.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "c.npz")
    >>> save_checkpoint(p, {"x": np.arange(3)}, {"step": 7})
    >>> a, m = load_checkpoint(p); a["x"].tolist(), m["step"]
    ([0, 1, 2], 7)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_META] = np.array(json.dumps(_jsonable(meta or {})))
    _atomic_write(path, lambda f: np.savez(f, **payload), "wb")


def load_checkpoint(path, what="checkpoint"):
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``.

    Raises
    ------
    FileFormatError
        The file is truncated, corrupt or not an ``.npz`` archive (see :func:`read_npz`).
    """
    arrays = read_npz(path, what)
    meta = {}
    if _META in arrays:
        try:
            meta = json.loads(str(arrays.pop(_META)))
        except ValueError:
            raise FileFormatError(f"{what} {str(path)!r} has unreadable metadata") from None
    return arrays, meta


def rng_state_to_json(rng):
    """The state of a ``numpy.random.Generator`` as a JSON string."""
    return json.dumps(_jsonable(rng.bit_generator.state))


def rng_from_json(text):
    """A ``numpy.random.Generator`` in the state :func:`rng_state_to_json` recorded."""
    state = json.loads(text)
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


class JsonlLogger:
    """Appends one JSON object per line to ``path`` and flushes it at once."""

    def __init__(self, path, append=True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            self.path.write_text("")

    def log(self, **record):
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")


def read_jsonl(path, *, skip_partial=False):
    """The records of a JSON-lines file, as a list of dicts.

    ``skip_partial`` drops an unterminated last line (a write cut short by a killed process);
    any other unreadable line raises :class:`FileFormatError` naming its number.
    """
    with open(path) as f:
        lines = f.readlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if skip_partial and i == len(lines) - 1 and not line.endswith("\n"):
                break
            raise FileFormatError(f"{str(path)!r} line {i + 1} is not JSON: {line[:60]!r}") \
                from None
    return records


def trim_jsonl(path, keep):
    """Rewrite a JSON-lines file, atomically, with the records ``keep`` (a list of dicts)."""
    write_text_atomic(path, "".join(json.dumps(_jsonable(r)) + "\n" for r in keep))


def _chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def write_png(path, pixels):
    """Write an 8-bit grey (H, W) or RGB (H, W, 3) ``uint8`` array as a PNG."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (
            pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise ValueError(f"pixels must be uint8 (H, W) or (H, W, 1|3), got {pixels.dtype} "
                         f"{pixels.shape}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    h, w = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter 0 on every row
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))
    write_bytes_atomic(path, png)


def read_png(path):
    """Decode an 8-bit, non-interlaced grey or RGB PNG (filters 0-4) to a ``uint8`` array."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(tag + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad CRC in chunk {tag!r}")
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, color, _, _, interlace = header
    if depth != 8 or color not in (0, 2) or interlace:
        raise ValueError(f"{path}: only 8-bit grey/RGB non-interlaced PNGs are supported")
    ch = 1 if color == 0 else 3
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for r in range(h):
        ftype = raw[r * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, r * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        for i in range(stride):
            a = cur[i - ch] if i >= ch else 0
            b, c = prev[i], (prev[i - ch] if i >= ch else 0)
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + pred) & 0xFF
        out[r], prev = cur, cur
    return out.reshape(h, w, ch) if ch == 3 else out


def _to_uint8(images, scale):
    x = np.asarray(images, dtype=np.float64)
    axes = tuple(range(1, x.ndim))
    if scale == "per-image":
        lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    elif scale == "global":
        lo, hi = x.min(), x.max()
    else:
        raise ValueError(f"unknown scale {scale!r}; expected 'per-image' or 'global'")
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip(np.round(255 * (x - lo) / span), 0, 255).astype(np.uint8)


def save_image_grid(path, images, nrow=None, labels=None, scale="per-image", pad=1,
                    upscale=None):
    """Save NHWC images (C = 1 or 3) as one PNG grid.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, C)
    nrow : int, optional
        Rows of the grid. Default: one row per class when ``labels`` are given (sorted by
        class), else a near-square grid.
    labels : ndarray of int, optional
    scale : {"per-image", "global"}
        Min-max scaling of each image, or of all together.
    pad : int
        Pixels of black between images.
    upscale : int, optional
        Integer magnification; default 4 for images under 16 pixels, else 1.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images have shape {images.shape}; expected (n, H, W, 1|3)")
    n = images.shape[0]
    order = np.arange(n)
    if labels is not None:
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        classes, counts = np.unique(labels, return_counts=True)
        nrow = len(classes) if nrow is None else nrow
        ncol = int(counts.max()) if nrow == len(classes) else int(np.ceil(n / nrow))
    else:
        nrow = int(np.ceil(np.sqrt(n))) if nrow is None else nrow
        ncol = int(np.ceil(n / nrow))
    pix = _to_uint8(images[order], scale)
    up = (4 if max(images.shape[1:3]) < 16 else 1) if upscale is None else int(upscale)
    pix = pix.repeat(up, axis=1).repeat(up, axis=2)
    h, w, c = pix.shape[1:]
    grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.uint8)
    if labels is not None and nrow == len(np.unique(labels)):
        sorted_labels = labels[order]
        positions = []
        for r, cls in enumerate(np.unique(labels)):
            for col, i in enumerate(np.flatnonzero(sorted_labels == cls)):
                positions.append((i, r, col))
    else:
        positions = [(i, i // ncol, i % ncol) for i in range(n)]
    for i, r, col in positions:
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y0:y0 + h, x0:x0 + w] = pix[i]
    write_png(path, grid)


# ----------------------------------------------------------------------------- run directories

# the files a run writes; replacing a run removes these and nothing else the directory holds
RUN_FILES = ("config.json", "checkpoint.npz", "log.jsonl", "distilled.npz", "summary.json",
             "support.png", "best.npz", "eval-*.json", "curves.png", "support-*.png", "*.tmp")
LOCK_NAME = ".lock"


class RunDirectoryError(ValueError):
    """A run directory that cannot be used as asked: held by another process, holding another
    run, or not writable."""


def _read_holder(path):
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"({info.get('command', '?')}, since {info.get('since', '?')})")


def _try_lock(fd):
    """Take an exclusive lock on ``fd`` without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover -- Windows
    try:  # pragma: no cover
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


class RunDirectory:
    """A directory that holds one run and is written by one process at a time.

    A writing command first calls :meth:`check`, which only reads: it refuses a path that is a
    file, a directory another process holds, or one holding another run (other settings or
    another command) unless ``overwrite``. Once the run is known to be valid (data loaded,
    objective built), ``with run:`` creates the directory, takes an exclusive lock on its
    ``.lock`` file for the whole run, checks again under the lock, removes the files of a run
    being replaced (:data:`RUN_FILES`, nothing else) and writes ``config.json``. So a failed
    start writes nothing, and two processes never share a directory.

    The lock is a POSIX ``flock``: the kernel releases it when the holder exits, however it
    exits (even ``kill -9``), so a stale ``.lock`` file left by a killed process never blocks a
    later run. The file records who holds it, for the message the next process gets.

    Parameters
    ----------
    path : str or path
    config : dict
        The run's settings, with a ``"command"`` entry (``"distill"``, ``"label-solve"``).
    ignore : sequence of str
        Settings that may differ between a run and its continuation (step budget, progress
        bars, paths, ...).
    overwrite : bool
        Replace a run with other settings, or another command's run, instead of refusing.
    validate : callable, optional
        ``validate(path) -> str or None``: why a run with the same settings cannot be
        continued (say, a truncated checkpoint), which makes it a run to replace, too.

    Examples
    --------
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "run")
    >>> run = RunDirectory(out, {"command": "distill", "ipc": 10})
    >>> run.check()
    >>> with run:
    ...     sorted(os.listdir(out))
    ['.lock', 'config.json']
    >>> RunDirectory(out, {"command": "label-solve", "ipc": 10}).check()
    Traceback (most recent call last):
    ...
    kernelkip.io.RunDirectoryError: ... holds a 'distill' run; 'label-solve' would replace it: ...
    """

    def __init__(self, path, config, *, ignore=(), overwrite=False, validate=None):
        self.path = Path(path)
        self.config = dict(config)
        if "command" not in self.config:
            raise ValueError("config needs a 'command' entry")
        self.ignore = frozenset(ignore) | {"version", "command"}
        self.overwrite = bool(overwrite)
        self.validate = validate
        self.replacing = False
        self._fd = None

    # -- inspection (reads only)
    def _leftovers(self):
        names = sorted(p.name for p in self.path.iterdir())
        return [n for n in names if n != "config.json"
                and any(fnmatch.fnmatch(n, pat) for pat in RUN_FILES if pat != "*.tmp")]

    def _conflict(self):
        """Why the directory's contents would be replaced, or None if it holds this run or
        nothing of a run."""
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            left = self._leftovers()
            return (f"holds run files ({', '.join(left)}) but no config.json" if left else None)
        try:
            old = json.loads(cfg_path.read_text())
            if not isinstance(old, dict):
                raise ValueError
        except ValueError:
            return "has an empty or unreadable config.json"
        except OSError as err:
            raise RunDirectoryError(f"cannot read {cfg_path}: {err.strerror}") from None
        command = self.config["command"]
        if old.get("command", command) != command:
            return f"holds a {old.get('command')!r} run; {command!r} would replace it"
        diff = {k: (old.get(k), v) for k, v in _jsonable(self.config).items()
                if k not in self.ignore and old.get(k) != v}
        if diff:
            return f"holds a run with other settings {diff}"
        return None if self.validate is None else self.validate(self.path)

    def _holder(self):
        """Who holds the lock, or None."""
        lock = self.path / LOCK_NAME
        if not lock.exists():
            return None
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return None
        try:
            if fcntl is None:  # pragma: no cover
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(lock)
            return None
        finally:
            os.close(fd)  # closing drops a shared lock taken just to test

    def check(self):
        """Refuse, before any work, a path this run cannot use (see the class docstring)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"{self.path} is a file, not a run directory; choose "
                                    f"another output directory")
        if not self.path.exists():
            return
        holder = None if self._fd is not None else self._holder()  # our own lock is no conflict
        if holder is not None:
            raise RunDirectoryError(f"{self.path} is in use by {holder}; wait for it to "
                                    f"finish, or choose another output directory")
        why = self._conflict()
        if why is not None and not self.overwrite:
            raise RunDirectoryError(f"{self.path} {why}: choose another output directory, or "
                                    f"pass --overwrite to replace it")
        self.replacing = why is not None

    # -- ownership
    def __enter__(self):
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:
            raise RunDirectoryError(f"{self.path} is a file, not a run directory; choose "
                                    f"another output directory") from None
        except OSError as err:
            raise RunDirectoryError(f"cannot write to {self.path} ({err.strerror}); choose a "
                                    f"writable output directory") from None
        if not _try_lock(fd):
            os.close(fd)
            raise RunDirectoryError(f"{self.path} is in use by "
                                    f"{_read_holder(self.path / LOCK_NAME)}; wait for it to "
                                    f"finish, or choose another output directory")
        self._fd = fd
        try:
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "command": "kernelkip " + self.config["command"],
                    "since": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self.check()  # again, under the lock: another process may have finished meanwhile
            if self.replacing:
                for p in self.path.iterdir():
                    if any(fnmatch.fnmatch(p.name, pat) for pat in RUN_FILES) and p.is_file():
                        p.unlink()
            write_text_atomic(self.path / "config.json",
                              json.dumps(_jsonable(self.config), indent=2) + "\n")
        except OSError as err:
            self.release()
            raise RunDirectoryError(f"cannot write to {self.path} ({err.strerror}); choose a "
                                    f"writable output directory") from None
        except BaseException:
            self.release()
            raise
        return self

    def release(self):
        """Drop the lock (also done by the kernel when the process exits)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc):
        self.release()

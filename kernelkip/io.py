"""Checkpoints (atomic ``.npz``), JSON-lines logs, and PNG grids of support images.

Standard library and NumPy only: the PNG encoder is a few lines of ``zlib`` and ``struct``.
"""
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state_to_json", "rng_from_json",
           "JsonlLogger", "read_jsonl", "save_image_grid", "write_png", "read_png"]

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
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path):
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != _META}
        meta = json.loads(str(data[_META])) if _META in data.files else {}
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


def read_jsonl(path):
    """The records of a JSON-lines file, as a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
    Path(path).write_bytes(png)


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

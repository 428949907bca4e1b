"""Checkpoints, logs and PNG output."""
import zlib
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from kernelkip import io


def test_checkpoint_round_trip(tmp_path):
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3)}
    meta = {"step": np.int64(4), "nested": {"loss": np.float32(0.5), "shape": (2, 3)}}
    io.save_checkpoint(tmp_path / "c.npz", arrays, meta)
    got, got_meta = io.load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(got["x"], arrays["x"])
    assert got["x"].dtype == np.float32
    assert got_meta == {"step": 4, "nested": {"loss": 0.5, "shape": [2, 3]}}
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    io.save_checkpoint(path, {"x": np.zeros(2)}, {"step": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint(path, {"x": np.ones(2)}, {"step": 2})
    assert io.load_checkpoint(path)[1]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_rng_state_round_trip_reproduces_draws():
    rng = np.random.default_rng(123)
    rng.normal(size=7)
    text = io.rng_state_to_json(rng)
    expected = rng.integers(0, 1000, size=20)
    np.testing.assert_array_equal(io.rng_from_json(text).integers(0, 1000, size=20), expected)


def test_jsonl_appends(tmp_path):
    log = io.JsonlLogger(tmp_path / "log.jsonl")
    log.log(step=1, loss=np.float64(0.25))
    io.JsonlLogger(tmp_path / "log.jsonl", append=True).log(step=2, acc=np.array([0.5]))
    assert io.read_jsonl(tmp_path / "log.jsonl") == [{"step": 1, "loss": 0.25},
                                                     {"step": 2, "acc": [0.5]}]


@given(h=st.integers(1, 9), w=st.integers(1, 9), rgb=st.booleans(), seed=st.integers(0, 99))
def test_png_round_trip_with_valid_chunks(tmp_path_factory, h, w, rgb, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3) if rgb else (h, w),
                                                  dtype=np.uint8)
    path = tmp_path_factory.mktemp("png") / "x.png"
    io.write_png(path, pixels)
    np.testing.assert_array_equal(io.read_png(path), pixels)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, tags = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        body = data[pos + 4:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(body) & 0xFFFFFFFF == crc
        tags.append(body[:4])
        pos += 12 + length
    assert tags[0] == b"IHDR" and tags[-1] == b"IEND"


def test_image_grid_one_row_per_class_and_per_image_scaling(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 4, 4, 1))
    labels = np.array([2, 0, 1, 0, 2, 1])
    io.save_image_grid(tmp_path / "g.png", images, labels=labels, pad=1, upscale=2)
    grid = io.read_png(tmp_path / "g.png")
    assert grid.shape == (3 * (8 + 1) + 1, 2 * (8 + 1) + 1)   # 3 classes, 2 per class
    first = grid[1:9, 1:9]          # class 0, first image: images[1], scaled to [0, 255]
    assert first.min() == 0 and first.max() == 255
    with pytest.raises(ValueError, match="shape"):
        io.save_image_grid(tmp_path / "bad.png", np.zeros((2, 4, 4, 2)))

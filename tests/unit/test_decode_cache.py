"""Decoding folder/CSV photos once: parallel workers and the on-disk cache of decoded pixels."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrade.core.errors import ConfigError, DataError
from imgrade.data import cache
from imgrade.data.cache import DecodeOptions, decode_images
from imgrade.data.images import load_image


def _photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_a_second_decode_reads_the_cache_and_decodes_nothing(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="imgrade")  # the records, whether or not a handler prints them
    paths = _photos(tmp_path / "photos", 12)
    options = DecodeOptions(cache_dir=tmp_path / "cache")
    first = decode_images(paths, 32, options)
    assert "decoded 12 images" in caplog.text
    caplog.clear()
    assert [p.suffix for p in (tmp_path / "cache" / "decoded").iterdir()] == [".npy"]

    def no_decoding(*args):
        raise AssertionError("a cached set was decoded again")

    monkeypatch.setattr(cache, "load_image", no_decoding)
    second = decode_images(paths, 32, options)
    assert isinstance(second, np.memmap) and "from the cache" in caplog.text
    np.testing.assert_array_equal(second, first)
    np.testing.assert_array_equal(second, np.stack([load_image(p, 32) for p in paths]))


def test_an_edited_photo_or_another_size_misses_the_cache(tmp_path):
    paths = _photos(tmp_path / "photos", 4)
    options = DecodeOptions(cache_dir=tmp_path / "cache")
    before = np.array(decode_images(paths, 32, options))
    Image.new("RGB", (40, 48), (255, 0, 0)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))  # even a file older than the entry counts as changed
    after = decode_images(paths, 32, options)
    assert (after[1] == [255, 0, 0]).all() and not np.array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[[0, 2, 3]], before[[0, 2, 3]])
    assert decode_images(paths, 16, options).shape == (4, 16, 16, 3)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 3


def test_workers_decode_the_same_pixels_in_the_same_order(tmp_path):
    paths = _photos(tmp_path / "photos", 3 * cache.CHUNK + 5)
    here = decode_images(paths, 32, DecodeOptions(workers=0))
    parallel = decode_images(paths, 32, DecodeOptions(workers=2))
    np.testing.assert_array_equal(parallel, here)


def test_a_corrupt_photo_in_a_worker_is_one_line_and_leaves_no_cache_entry(tmp_path):
    paths = _photos(tmp_path / "photos", 2 * cache.CHUNK + 3)
    paths[cache.CHUNK + 7].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    folder = tmp_path / "cache"
    with pytest.raises(DataError) as caught:
        decode_images(paths, 32, DecodeOptions(workers=2, cache_dir=folder))
    message = str(caught.value)
    assert str(paths[cache.CHUNK + 7]) in message and "\n" not in message
    assert list((folder / "decoded").iterdir()) == [], "neither an entry nor a temporary file is left"


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    paths = _photos(tmp_path / "photos", 3)
    options = DecodeOptions(cache_dir=tmp_path / "cache")
    good = np.array(decode_images(paths, 32, options))
    (entry,) = (tmp_path / "cache" / "decoded").glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk outside imgrade
    np.testing.assert_array_equal(decode_images(paths, 32, options), good)


def test_an_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="--cache off"):
        decode_images(_photos(tmp_path / "photos", 2), 32, DecodeOptions(cache_dir=blocker / "sub"))


def test_cache_settings_from_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGRADE_CACHE_DIR", str(tmp_path / "env"))
    assert DecodeOptions.from_config(0, "auto").cache_dir == tmp_path / "env"
    assert DecodeOptions.from_config(3, "off") == DecodeOptions(3, None)
    assert DecodeOptions.from_config(0, str(tmp_path / "x")).cache_dir == tmp_path / "x"
    monkeypatch.delenv("IMGRADE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "imgrade"
    with pytest.raises(ConfigError, match="--workers"):
        DecodeOptions.from_config(-1, "auto")

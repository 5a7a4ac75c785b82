"""--resize squash|crop|pad on hand-made pixels, the decode cache's key, the config and the ONNX metadata."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgrade.cli import main
from imgrade.config import DataConfig, RunConfig, dump_config, load_config
from imgrade.core.errors import ConfigError
from imgrade.data import cache
from imgrade.data.cache import DecodeOptions, cache_key, decode_images
from imgrade.data.images import array_pixels, decode_image, image_pixels, load_image, stored_size
from imgrade.data.resize import Resize, pad_square, resize_square
from imgrade.runtime.onnx_engine import resize_mode


def _wide() -> np.ndarray:
    """A 2-high, 4-wide photo whose red channel numbers its columns 10, 20, 30, 40 (rows +1)."""
    photo = np.zeros((2, 4, 3), np.uint8)
    photo[..., 0] = [[10, 20, 30, 40], [11, 21, 31, 41]]
    photo[..., 1] = 100
    return photo


def test_crop_keeps_the_centred_square_of_a_wide_and_a_tall_photo():
    cropped = Resize(2, "crop")(_wide())
    assert cropped[..., 0].tolist() == [[20, 30], [21, 31]] and (cropped[..., 1] == 100).all()
    tall = np.ascontiguousarray(_wide().transpose(1, 0, 2))  # 4 high, 2 wide
    assert Resize(2, "crop")(tall)[..., 0].tolist() == [[20, 21], [30, 31]]


def test_pad_centres_the_photo_on_the_mean_colour_of_the_edges_it_extends():
    padded = pad_square(_wide())  # 4x4: one band row above, one below
    # the top and bottom rows of the photo average to (10+20+30+40+11+21+31+41)/8 = 25.5 -> 26
    assert padded[..., 0].tolist() == [[26] * 4, [10, 20, 30, 40], [11, 21, 31, 41], [26] * 4]
    assert (padded[..., 1] == 100).all()
    # a tall photo gets columns left and right, the odd one after it; their colour is the mean of
    # its left and right columns
    tall = np.zeros((3, 2, 3), np.uint8)
    tall[..., 0] = [[0, 60], [30, 90], [0, 60]]  # mean of both columns: 40
    assert pad_square(tall)[..., 0].tolist() == [[0, 60, 40], [30, 90, 40], [0, 60, 40]]
    # padded to 4x4, then shrunk to 2x2 by averaging 2x2 blocks (BOX; halves round up):
    # (26+26+10+20)/4 = 20.5, (26+26+30+40)/4 = 30.5, (11+21+26+26)/4 = 21, (31+41+26+26)/4 = 31
    assert Resize(2, "pad")(_wide())[..., 0].tolist() == [[21, 31], [21, 31]]


def test_squash_is_the_default_and_gives_the_pixels_it_always_gave():
    rng = np.random.default_rng(0)
    for shape in [(40, 64, 3), (64, 40, 3), (33, 33, 3), (7, 12, 3), (32, 32, 3)]:
        photo = rng.integers(0, 256, shape, dtype=np.uint8)
        before = resize_square(photo, 32)  # the resize every photo went through before there were modes
        np.testing.assert_array_equal(Resize(32)(photo), before)
        np.testing.assert_array_equal(array_pixels(photo, "photo", 32), before)
        np.testing.assert_array_equal(array_pixels(photo, "photo", Resize(32, "squash")), before)
        np.testing.assert_array_equal(image_pixels(Image.fromarray(photo), "photo", 32), before)
    assert DataConfig().resize == "squash" and Resize.of(32) == Resize(32, "squash")


def test_a_square_photo_comes_out_the_same_in_every_mode():
    photo = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    squashed = Resize(32, "squash")(photo)
    for mode in ("crop", "pad"):
        np.testing.assert_array_equal(Resize(32, mode)(photo), squashed)


def test_every_decoder_honours_the_mode(tmp_path):
    photo = np.random.default_rng(2).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(photo).save(path)
    for mode in ("squash", "crop", "pad"):
        resize = Resize(16, mode)
        expected = resize(photo)
        np.testing.assert_array_equal(load_image(path, resize), expected)
        np.testing.assert_array_equal(decode_image(path.read_bytes(), "wide.png", resize), expected)
        np.testing.assert_array_equal(image_pixels(Image.open(path), "wide.png", resize), expected)
        np.testing.assert_array_equal(array_pixels(photo, "wide", resize), expected)
    assert not np.array_equal(load_image(path, Resize(16, "crop")), load_image(path, Resize(16, "squash")))


def test_a_bad_mode_is_one_line_naming_the_flag(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^data\.resize 'zoom' is not one of squash, crop, pad: set --resize$"):
        DataConfig(resize="zoom")
    with pytest.raises(ConfigError, match="set --resize"):
        Resize(32, "stretch")
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  resize: fill\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resize" in err and "'fill'" in err
    assert main(["train", "--data", str(tmp_path), "--resize", "zoom"]) == 2
    assert "--resize: invalid choice: 'zoom'" in capsys.readouterr().err


def test_the_mode_is_a_yaml_key_that_round_trips(tmp_path):
    cfg = RunConfig.from_dict({"data": {"resize": "pad"}})
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    assert "resize: pad" in (tmp_path / "config.yaml").read_text()
    assert load_config(tmp_path / "config.yaml").data.resize == "pad"
    assert RunConfig.from_dict({"data": {}}).data.resize == "squash"  # a run written before there were modes


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        paths.append(folder / f"p{i}.png")
        Image.fromarray(rng.integers(0, 256, (24, 48, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_the_cache_key_differs_by_mode_and_squash_keeps_its_old_key(tmp_path):
    paths = _photos(tmp_path / "photos", 3)
    keys = {mode: cache_key(paths, Resize(32, mode)) for mode in ("squash", "crop", "pad")}
    assert len(set(keys.values())) == 3
    # squash's key is the one written before there were modes: caches already on disk stay valid
    old = hashlib.sha256(f"imgrade-decoded v{cache.DECODER_VERSION} size 32\n".encode())
    for path in paths:
        stat = path.stat()
        old.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    assert keys["squash"] == cache_key(paths, 32) == old.hexdigest()[:32]


def test_a_cached_squash_decode_is_not_reused_for_crop(tmp_path, monkeypatch):
    paths = _photos(tmp_path / "photos", 4)
    options = DecodeOptions(cache_dir=tmp_path / "cache")
    squashed = np.array(decode_images(paths, Resize(32, "squash"), options))
    cropped = np.array(decode_images(paths, Resize(32, "crop"), options))
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 2
    np.testing.assert_array_equal(cropped, np.stack([load_image(p, Resize(32, "crop")) for p in paths]))
    assert not np.array_equal(cropped, squashed)

    def no_decoding(*args):
        raise AssertionError("a cached set was decoded again")

    monkeypatch.setattr(cache, "load_image", no_decoding)
    np.testing.assert_array_equal(decode_images(paths, Resize(32, "crop"), options), cropped)


def test_stored_size_reads_the_header_upright(tmp_path):
    wide = tmp_path / "wide.jpg"
    Image.new("RGB", (160, 80)).save(wide)
    assert stored_size(wide) == (160, 80)
    turned = tmp_path / "turned.jpg"  # stored 160x80 with EXIF orientation 6: shown 80 wide, 160 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (160, 80)).save(turned, exif=exif.tobytes())
    assert stored_size(turned) == (80, 160) == ImageOps.exif_transpose(Image.open(turned)).size


def test_onnx_metadata_without_a_mode_means_squash():
    assert resize_mode({"input": {"resize_mode": "crop"}}) == "crop"
    assert resize_mode({"input": {"resize": "whole image to a square"}}) == "squash"  # an older file
    assert resize_mode({}) == "squash"


def test_describe_states_the_mode_in_words():
    words = Resize(32, "pad").describe()
    assert words.startswith("pad: padded to a square") and "32x32" in words

"""Image decoding: every mode to RGB, EXIF orientation, resizing, and errors that name the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgrade.core.errors import DataError
from imgrade.data import images
from imgrade.data.images import decode_image, list_images, load_image, load_images, natural_sort_key


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def reopened_mode(data: bytes) -> str:
    """The mode Pillow gives the encoded image, so a test knows which branch it exercises."""
    return Image.open(io.BytesIO(data)).mode


def one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ---- modes ------------------------------------------------------------------------------------


def test_greyscale_becomes_equal_rgb_channels():
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    pixels = decode_image(encode(Image.fromarray(grey, mode="L")), "grey.png", 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], grey)


def test_rgba_composites_on_white():
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 128)  # half-transparent black: 255 * (1 - 128/255) = 127
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 2] = (10, 20, 30, 0)  # fully transparent: white, whatever colour is stored
    rgba[0, 3] = (200, 100, 0, 51)  # 20% opaque: 0.2 * c + 0.8 * 255
    pixels = decode_image(encode(Image.fromarray(rgba, mode="RGBA")), "cutout.png", 32)
    assert pixels[0, 0].tolist() == [127, 127, 127]
    assert pixels[0, 1].tolist() == [255, 0, 0]
    assert pixels[0, 2].tolist() == [255, 255, 255]
    assert pixels[0, 3].tolist() == [244, 224, 204]


def test_la_composites_on_white():
    la = Image.new("LA", (32, 32), color=(0, 128))
    data = encode(la)
    assert reopened_mode(data) == "LA"
    assert decode_image(data, "la.png", 32)[5, 5].tolist() == [127, 127, 127]


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_16_bit_greyscale_scales_by_bit_depth(format):
    grey = np.zeros((32, 32), dtype=np.uint16)
    grey[0, :3] = (65535, 32768, 257)
    data = encode(Image.fromarray(grey), format)
    assert reopened_mode(data) == "I;16"
    pixels = decode_image(data, "deep.png", 32)
    assert pixels[0, :4, 0].tolist() == [255, 128, 1, 0]  # 32768 * 255 / 65535 = 127.5019
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_16_bit_big_endian_tiff():
    grey = np.full((32, 32), 65535, dtype=">u2")
    grey[0, 0] = 32768
    image = Image.frombytes("I;16B", (32, 32), grey.tobytes())
    data = encode(image, "TIFF")
    assert reopened_mode(data) == "I;16B"
    pixels = decode_image(data, "big.tif", 32)
    assert pixels[0, 0].tolist() == [128, 128, 128] and pixels[1, 1].tolist() == [255, 255, 255]


def test_32_bit_integer_greyscale_scales_not_clips():
    grey = np.zeros((32, 32), dtype=np.int32)
    grey[0, :3] = (2**31 - 1, 2**30, 65535)
    data = encode(Image.fromarray(grey), "TIFF")
    assert reopened_mode(data) == "I"
    pixels = decode_image(data, "i32.tif", 32)
    assert pixels[0, :3, 0].tolist() == [255, 128, 0]  # 65535 is tiny out of 2**31 - 1


@pytest.mark.parametrize("value, expected", [(0.5, 128), (1.0, 255), (200.0, 200)])
def test_float_greyscale(value, expected):
    grey = np.zeros((32, 32), dtype=np.float32)
    grey[0, 0] = value  # the other pixels are 0, so the maximum is this value
    data = encode(Image.fromarray(grey), "TIFF")
    assert reopened_mode(data) == "F"
    assert decode_image(data, "float.tif", 32)[0, 0].tolist() == [expected] * 3


def test_palette_with_and_without_transparency():
    palette_image = Image.new("P", (32, 32), color=1)
    palette_image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    palette_image.putpixel((0, 0), 0)
    data = encode(palette_image)
    assert reopened_mode(data) == "P"
    pixels = decode_image(data, "palette.png", 32)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[5, 5].tolist() == [10, 200, 30]
    # with index 0 transparent, the black pixel becomes white
    pixels = decode_image(encode(palette_image, transparency=0), "palette.png", 32)
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[5, 5].tolist() == [10, 200, 30]


def test_cmyk():
    cmyk = Image.new("CMYK", (32, 32), color=(0, 0, 0, 0))  # no ink: white
    cmyk.putpixel((0, 0), (255, 0, 0, 0))  # full cyan ink
    data = encode(cmyk, "TIFF")
    assert reopened_mode(data) == "CMYK"
    pixels = decode_image(data, "print.tif", 32)
    assert pixels[5, 5].tolist() == [255, 255, 255] and pixels[0, 0].tolist() == [0, 255, 255]


# ---- orientation and size --------------------------------------------------------------------


def test_exif_orientation_6_is_applied():
    # stored 64 wide x 32 tall: left half red, right half blue. Orientation 6 says "rotate 90
    # degrees clockwise to display", so the upright photo is 32 wide x 64 tall, red on top.
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    pixels = decode_image(data, "phone.jpg", 32).astype(int)
    top, bottom = pixels[4, 16], pixels[28, 16]
    assert top[0] > 200 and top[2] < 60, top  # red
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue
    left, right = pixels[16, 4], pixels[16, 28]
    assert abs(left - right).max() < 40  # no longer split left/right


def test_resize_64x48_to_32_averages_whole_image():
    stripes = np.zeros((48, 64, 3), dtype=np.uint8)
    stripes[:, 1::2] = 200  # alternating 0/200 columns: each output pixel averages two -> 100
    stripes[:, 32:] = (0, 0, 255)  # right half blue: nothing is cropped away
    pixels = decode_image(encode(Image.fromarray(stripes)), "wide.png", 32)
    assert pixels.shape == (32, 32, 3)
    assert (pixels[:, :16] == 100).all()
    assert (pixels[:, 16:] == (0, 0, 255)).all()


def test_enlarging_keeps_a_flat_colour():
    pixels = decode_image(encode(Image.new("RGB", (20, 10), (12, 34, 56))), "small.png", 32)
    assert pixels.shape == (32, 32, 3) and (pixels == (12, 34, 56)).all()


def test_image_of_the_target_size_passes_through_byte_exact():
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(noise)), "exact.png", 32), noise)


# ---- errors name the file --------------------------------------------------------------------


@pytest.mark.parametrize("format", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, format):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), format)
    path = tmp_path / f"cut.{format.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as excinfo:
        load_image(path, 32)
    one_line_error(excinfo, str(path), "truncated or corrupt")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError) as excinfo:
        load_image(path, 32)
    one_line_error(excinfo, str(path), "0 bytes")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(DataError) as excinfo:
        load_image(path, 32)
    one_line_error(excinfo, str(path), "not an image")


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_image(tmp_path / "gone.jpg", 32)
    one_line_error(excinfo, "gone.jpg", "does not exist")


def test_image_over_max_pixels_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    data = encode(Image.new("RGB", (32, 32)))  # 1024 pixels
    with pytest.raises(DataError) as excinfo:
        decode_image(data, "bomb.png", 32)
    one_line_error(excinfo, "bomb.png", "32x32", "1,000")


@pytest.mark.parametrize("pillow_limit", [600, 300])  # 1024 pixels: Pillow warns over 1x, errors over 2x
def test_pillow_decompression_bomb_becomes_data_error(monkeypatch, pillow_limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    data = encode(Image.new("RGB", (32, 32)))
    with pytest.raises(DataError) as excinfo:
        decode_image(data, "bomb.png", 32)
    one_line_error(excinfo, "bomb.png", "too many pixels")


# ---- listing and loading many ----------------------------------------------------------------


def test_natural_sort_key():
    names = ["b10.png", "b2.png", "a.png", "B1.png"]
    assert sorted(names, key=natural_sort_key) == ["a.png", "B1.png", "b2.png", "b10.png"]


def test_list_images_recursive_natural_and_filtered(tmp_path):
    for name in ["img10.png", "img2.JPG", "sub/img1.webp", "notes.txt", ".hidden.png", ".cache/x.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path)]
    assert found == ["img2.JPG", "img10.png", "sub/img1.webp"]


def test_list_images_single_file(tmp_path):
    path = tmp_path / "one.jpeg"
    path.write_bytes(b"x")
    assert list_images(path) == [path]
    other = tmp_path / "one.txt"
    other.write_text("x")
    with pytest.raises(DataError) as excinfo:
        list_images(other)
    one_line_error(excinfo, str(other), ".png", ".jpg")


def test_list_images_empty_folder(tmp_path):
    (tmp_path / "photo.heic").write_bytes(b"x")
    with pytest.raises(DataError) as excinfo:
        list_images(tmp_path)
    one_line_error(excinfo, f"no images in {tmp_path}", "photo.heic", ".png, .jpg")


def test_list_images_missing_path(tmp_path):
    with pytest.raises(DataError) as excinfo:
        list_images(tmp_path / "nowhere")
    one_line_error(excinfo, "nowhere", "does not exist")


def test_load_images_stacks_in_order(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 40), colour).save(paths[-1])
    stacked = load_images(paths, 16)
    assert stacked.shape == (3, 16, 16, 3) and stacked.dtype == np.uint8
    assert [stacked[i, 0, 0].tolist() for i in range(3)] == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert load_images([], 16).shape == (0, 16, 16, 3)


@pytest.mark.parametrize("fmt", ["EPS", "PPM", "TGA", "ICO"])
def test_formats_outside_the_photo_list_are_refused_unread(fmt):
    # Pillow would read these (EPS through Ghostscript, where installed); a photo never needs them
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format=fmt)
    with pytest.raises(DataError, match="not an image Pillow can read"):
        decode_image(buffer.getvalue(), f"x.{fmt.lower()}", 32)

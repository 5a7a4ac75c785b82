"""The decoding bombs of benchmarks/bombs.py are what they claim: mode, size, small file, a picture.

The benchmarks' goals are only as good as their bombs: a bomb written in the wrong mode, or one
that Pillow cannot decode, would measure nothing.
"""

import os
import stat

import bombs  # benchmarks/bombs.py: tests/conftest.py puts benchmarks/ on the path
import numpy as np
import pytest
from PIL import Image

from imgrade.core.errors import DataError
from imgrade.data.images import MAX_PIXELS, decode_image

SMALL = 48


@pytest.mark.parametrize("name", [name for name, bomb in bombs.BOMBS.items() if not bomb.over_limit])
def test_each_bomb_decodes_to_a_bar_on_a_plain_background_in_its_mode(name, tmp_path):
    path = bombs.write_bomb(name, tmp_path, side=SMALL)

    assert path.name == f"{name}-{SMALL}x{SMALL}.{bombs.BOMBS[name].extension}"
    with Image.open(path) as image:
        assert image.mode == bombs.BOMBS[name].mode
        assert image.size == (SMALL, SMALL)
        image.load()  # every row is there and well formed
        pixels = np.asarray(image)
        if name == "palette_trns":
            assert image.info["transparency"] == 0  # palette entry 0, the background, is transparent
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert (border == pixels[0, 0]).all()
    assert not np.array_equal(pixels[SMALL // 2, SMALL // 2], pixels[0, 0])  # the bar


def test_a_full_size_bomb_is_a_small_file_just_under_the_pixel_limit(tmp_path):
    path = bombs.write_bomb("grey", tmp_path)

    with Image.open(path) as image:  # the header only: nothing decoded
        width, height = image.size
    assert (width, height) == (bombs.FULL_SIDE, bombs.FULL_SIDE) == (7999, 7999)
    assert width * height < MAX_PIXELS <= (width + 1) * (height + 1)  # the largest square under the limit
    assert path.stat().st_size < 200_000  # 64 MB of pixels


def test_the_over_limit_bomb_is_refused_from_its_header(tmp_path):
    path = bombs.write_bomb("over_limit", tmp_path, side=SMALL)  # the side does not apply to it

    with Image.open(path) as image:
        assert image.size == (bombs.OVER_SIDE, bombs.OVER_SIDE)
        assert image.size[0] * image.size[1] > MAX_PIXELS
    with pytest.raises(DataError, match="over the 64,000,000 limit"):
        decode_image(path.read_bytes(), path.name, 32)


def test_a_bomb_already_written_is_reused(tmp_path):
    first = bombs.write_bomb("la", tmp_path, side=SMALL)
    os.utime(first, ns=(0, 0))

    assert bombs.write_bombs(tmp_path, side=SMALL, names=["la"]) == {"la": first}
    assert first.stat().st_mtime_ns == 0


@pytest.mark.parametrize("depth", [1, 12])  # 12 folders deep: a socket path over 108 bytes
def test_special_entries_are_a_fifo_device_links_and_a_socket(tmp_path, depth):
    folder = tmp_path.joinpath(*["a-long-folder-name"] * depth)

    entries = bombs.special_entries(folder)
    again = bombs.special_entries(folder)  # made afresh over the old ones

    assert again == entries == {name: folder / f"{name}.png" for name in ("fifo", "zero", "null", "sock")}
    assert stat.S_ISFIFO(entries["fifo"].lstat().st_mode)
    assert os.readlink(entries["zero"]) == "/dev/zero" and stat.S_ISCHR(entries["zero"].stat().st_mode)
    assert os.readlink(entries["null"]) == "/dev/null"
    assert stat.S_ISSOCK(entries["sock"].lstat().st_mode)

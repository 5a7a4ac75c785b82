"""The graph's crop, pad and resize (runtime/graph_resize.py) give imgrade's decoder's pixels exactly."""

import numpy as np
import pytest
import torch

from imgrade.data.resize import Resize
from imgrade.runtime.graph_resize import GraphResize

SHAPES = [
    (45, 70),
    (70, 45),
    (100, 40),
    (31, 64),
    (64, 31),
    (20, 30),
    (33, 33),
    (32, 32),
    (17, 17),
    (7, 200),
    (250, 123),
]


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_the_graph_resizes_as_the_decoder_does(mode):
    rng = np.random.default_rng(0)
    graph = GraphResize(32, mode)
    for height, width in SHAPES:
        photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        photo[:, : width // 3] //= 4  # an item's edge: smooth photos would hide an off-by-one column
        expected = Resize(32, mode)(photo)
        got = graph(torch.from_numpy(photo[None]))[0].numpy()
        assert got.dtype == np.uint8 and np.array_equal(got, expected), (mode, height, width)


def test_a_batch_is_resized_photo_by_photo():
    photos = np.random.default_rng(1).integers(0, 256, (3, 50, 90, 3), dtype=np.uint8)
    batch = GraphResize(24, "pad")(torch.from_numpy(photos)).numpy()
    assert batch.shape == (3, 24, 24, 3)
    assert all(np.array_equal(batch[i], Resize(24, "pad")(photos[i])) for i in range(3))

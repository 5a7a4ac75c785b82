"""How a photo of any shape becomes the network's square input: its side and what happens to a
photo that is not square (``--image-size``, ``--resize``).

The run's config stores both, so training, evaluation, calibration, ``predict``, ``serve``, the
Python API, the Ray job and an exported ``.onnx`` file all turn a photo into the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgrade.config import RESIZE_MODES
from imgrade.core.errors import ConfigError

DEFAULT_MODE = "squash"
"""The reference's way: the whole photo, stretched to a square."""

DONE = {"squash": "squashed", "crop": "cropped", "pad": "padded"}
"""What each mode does to a photo that is not square, as a message says it."""

MAX_SHRINK = 4.0
"""``imgrade data info`` warns when the typical photo is shrunk by more than this to the input size."""

_WORDS = {
    "squash": "the whole image stretched to a square (no crop, no pad)",
    "crop": "the centred square of side min(height, width) cut out (the ends of the long side dropped)",
    "pad": "padded to a square, centred, with the mean colour of the two edges the pad extends",
}


@dataclass(frozen=True)
class Resize:
    """A photo's way to the network: ``size`` pixels a side; ``mode`` for a photo that is not square.

    squash stretches the whole photo (the reference: nothing is lost, the aspect ratio is);
    crop keeps the centred square of side min(H, W) (the aspect ratio is kept, the ends of the
    long side are lost); pad adds bands to the short side, centred, to make a square (nothing is
    lost and the aspect ratio is kept, at the cost of pixels spent on the bands). Each then
    resizes the square: averaging pixels (BOX) when shrinking, interpolating (BILINEAR) when
    enlarging. A square photo comes out the same in every mode.

    >>> photo = np.zeros((2, 4, 3), np.uint8); photo[:, 1:3] = 200  # 4 wide, 2 high
    >>> Resize(2, "crop")(photo)[..., 0].tolist()
    [[200, 200], [200, 200]]
    >>> Resize(2, "squash")(photo)[..., 0].tolist()
    [[100, 100], [100, 100]]
    """

    size: int = 32
    """The side of the square in pixels."""
    mode: str = DEFAULT_MODE
    """squash, crop or pad (see the class)."""

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ConfigError(f"resize mode {self.mode!r} is not one of {', '.join(RESIZE_MODES)}: set --resize")
        if int(self.size) < 1:
            raise ConfigError(f"image_size must be a positive number of pixels, got {self.size}: set --image-size")

    @classmethod
    def of(cls, value: Resize | int) -> Resize:
        """``value`` itself, or a side in pixels as the default mode (squash).

        >>> Resize.of(32) == Resize(32, "squash")
        True
        """
        return value if isinstance(value, Resize) else cls(int(value))

    def describe(self) -> str:
        """The resize in words, as an exported model's metadata states it.

        >>> Resize(32, "crop").describe().split(":")[0]
        'crop'
        """
        return (
            f"{self.mode}: {_WORDS[self.mode]}, then resized to {self.size}x{self.size} "
            "(BOX when shrinking, BILINEAR when enlarging), after the EXIF orientation is applied"
        )

    def shrink(self, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """How many times each photo of ``width`` x ``height`` is shrunk to the input size: its long
        side over ``size`` (squash, pad), or its short side (crop, which keeps a square of that side).

        >>> Resize(32, "squash").shrink(np.array([160]), np.array([80])).tolist()
        [5.0]
        >>> Resize(32, "crop").shrink(np.array([160]), np.array([80])).tolist()
        [2.5]
        """
        side = np.minimum(width, height) if self.mode == "crop" else np.maximum(width, height)
        return np.asarray(side, dtype=np.float64) / self.size

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (size, size, 3) uint8 RGB."""
        height, width = pixels.shape[:2]
        if height != width and self.mode == "crop":
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            pixels = pixels[top : top + side, left : left + side]
        elif height != width and self.mode == "pad":
            pixels = pad_square(pixels)
        return resize_square(pixels, self.size)


def pad_square(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 padded to (S, S, 3), S = max(H, W), the photo centred (the odd pixel after it).

    The bands take the mean colour (rounded) of the photo's two edges they extend: the top and
    bottom rows of a wide photo, the left and right columns of a tall one. Grading photos are taken
    on a plain backdrop (a tray, a belt, a table), so the square looks like the same photo on a
    wider backdrop: black bands would add hard edges that a square photo of the item lacks, and
    repeating the edge pixels would stretch an item touching the frame into a longer one.

    >>> photo = np.zeros((1, 3, 3), np.uint8); photo[..., 0] = [10, 20, 60]
    >>> pad_square(photo)[..., 0].tolist()
    [[30, 30, 30], [10, 20, 60], [30, 30, 30]]
    """
    height, width = pixels.shape[:2]
    side = max(height, width)
    edges = np.concatenate([pixels[0], pixels[-1]]) if width > height else np.concatenate([pixels[:, 0], pixels[:, -1]])
    fill = edge_colour(edges)
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[...] = fill
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = pixels
    return square


def edge_colour(edges: np.ndarray) -> np.ndarray:
    """The pad's colour: the mean, rounded, of the (N, 3) uint8 edge pixels it extends, as (3,) uint8.

    >>> edge_colour(np.array([[10, 0, 0], [20, 0, 1]], np.uint8)).tolist()
    [15, 0, 0]
    """
    return np.rint(edges.astype(np.float64).mean(axis=0)).astype(np.uint8)


def resize_square(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (image_size, image_size, 3) stretched: BOX when shrinking, BILINEAR otherwise.

    An image already of that size is returned unchanged, byte for byte.
    """
    height, width = pixels.shape[:2]
    if height == width == image_size:
        return pixels
    shrinking = height >= image_size and width >= image_size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    image = Image.fromarray(pixels)
    # The horizontal pass, then the vertical one, each its own call: Pillow 13 runs the vertical
    # pass first for some tall photos, and the rounding between passes then differs by a level.
    # Fixing the order keeps decoded pixels the same under every Pillow and equal to the
    # exported graph's own resize (runtime/graph_resize.py).
    if width != image_size:
        image = image.resize((image_size, height), resample)
    if height != image_size:
        image = image.resize((image_size, image_size), resample)
    return np.asarray(image).copy()

"""Grade photos with a file written by `imgrade export`, using ONNX Runtime, NumPy and Pillow only.

What a consumer without imgrade does (a sorting line's PC, a C# or C++ program, ONNX Runtime
Web follow the same steps): read the input size and grade names from the file's metadata, decode
each photo to RGB and resize it as the metadata says, feed uint8 pixels (N, S, S, 3), and read
the graph's `grade` and `grade_set` outputs. The graph itself scales the pixels, subtracts the
training mean, runs the network and decides the grade with the run's tuned cut points (or the
head's rule) and its calibrated grade sets.

    python examples/grade_with_onnxruntime.py model.onnx photo1.png photo2.jpg > grades.csv
"""

import csv
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load_pixels(path: str, size: int, resize: str) -> np.ndarray:
    """One photo as (size, size, 3) uint8, prepared as imgrade prepares it (metadata `input`)."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent pixels on white
            image.alpha_composite(rgba)
        image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    height, width = pixels.shape[:2]
    if height != width and resize == "crop":  # the centred square of the shorter side
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        pixels = pixels[top : top + side, left : left + side]
    elif height != width and resize == "pad":  # centred on a square of the longer side
        side = max(height, width)
        edges = np.concatenate([pixels[0], pixels[-1]] if width > height else [pixels[:, 0], pixels[:, -1]])
        square = np.empty((side, side, 3), np.uint8)
        square[...] = np.rint(edges.astype(np.float64).mean(axis=0))  # the mean colour of the edges it extends
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = pixels
        pixels = square
    image = Image.fromarray(pixels)
    if image.size != (size, size):
        shrinking = min(image.size) >= size
        image = image.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def main(model: str, photos: list[str]) -> None:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["imgrade"])
    size, grade_names = meta["input"]["size"], meta["grade_names"]
    resize = meta["input"].get("resize_mode", "squash")
    images = np.stack([load_pixels(path, size, resize) for path in photos])  # (N, S, S, 3) uint8
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"images": images})))
    writer = csv.writer(sys.stdout)
    writer.writerow(["image", "score", "grade", "grade_set"])
    for i, path in enumerate(photos):
        grade = grade_names[outputs["grade"][i]] if grade_names else ""
        grade_set = (
            [g for g, kept in zip(grade_names, outputs["grade_set"][i]) if kept] if "grade_set" in outputs else []
        )
        writer.writerow([path, f"{outputs['score'][i]:.4f}", grade, "|".join(grade_set)])


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    main(sys.argv[1], sys.argv[2:])

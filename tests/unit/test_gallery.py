"""The report's photo gallery and linked confusion matrix, on hand-made photos and grades."""

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from imgrade.data.imageset import ImageRows
from imgrade.evaluation import html
from imgrade.evaluation.gallery import GalleryPhotos, gallery_blocks, png_data_uri, worst_first

NAMES = ["L", "M", "S"]
# photo:        0    1    2    3    4    5    6
Y_TRUE = [0, 0, 0, 1, 1, 2, 2]
PREDICTED = [0, 1, 2, 1, 0, 2, 2]
SCORES = [0.1, 1.2, 2.1, 0.9, 0.3, 2.0, 1.6]
# grades off:   0    1    2    0    1    0    0;  |score - true|: .1 1.2 2.1 .1 .7 0 .4


class _Page(HTMLParser):
    """The sections of a rendered page, each with its attributes and its photo cards (figure attributes, img src)."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.links: list[tuple[str, str]] = []  # (href, text) in the confusion table
        self._section = None
        self._link = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = self.sections[attrs["id"]] = {**attrs, "cards": []}
        elif tag == "figure" and self._section is not None:
            self._section["cards"].append(attrs)
        elif tag == "img" and self._section is not None:
            self._section["cards"][-1].update(src=attrs["src"], width=attrs["width"], alt=attrs["alt"])
        elif tag == "a" and attrs.get("href", "").startswith("#cell-"):
            self._link = attrs["href"]

    def handle_data(self, data):
        if self._link is not None:
            self.links.append((self._link, data))
            self._link = None

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None


def _photos(per_grade: int, images=None) -> GalleryPhotos:
    if images is None:
        images = np.stack([np.full((32, 32, 3), 10 * i, dtype=np.uint8) for i in range(len(Y_TRUE))])
    ids = [f"photos/{NAMES[t]}/p{i}.png" for i, t in enumerate(Y_TRUE)]
    return GalleryPhotos(images, ids, np.array(Y_TRUE), np.array(SCORES), np.array(PREDICTED), per_grade)


def _render(photos: GalleryPhotos, names=NAMES) -> _Page:
    return _Page(html.render_report("t", gallery_blocks(photos, names)))


def _pixels(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as picture:
        return np.asarray(picture.convert("RGB"))


def test_worst_first_ranks_grades_off_then_score_off():
    assert worst_first(Y_TRUE, SCORES, PREDICTED).tolist() == [2, 1, 4, 6, 0, 3, 5]


def test_each_grade_shows_its_worst_photos_up_to_the_cap():
    page = _render(_photos(per_grade=2))
    grades = {s["data-grade"]: s for s in page.sections.values() if s["class"] == "grade"}
    assert list(grades) == NAMES
    # L's photos worst first: 2 (two grades off), 1 (one off), then 0 is cut by the cap
    assert [card["alt"].split(":")[0] for card in grades["L"]["cards"]] == ["photos/L/p2.png", "photos/L/p1.png"]
    assert [(c["data-true"], c["data-predicted"], c["class"]) for c in grades["L"]["cards"]] == [
        ("L", "S", "photo wrong"),
        ("L", "M", "photo wrong"),
    ]
    assert [c["alt"].split(":")[0] for c in grades["M"]["cards"]] == ["photos/M/p4.png", "photos/M/p3.png"]
    assert [c["alt"].split(":")[0] for c in grades["S"]["cards"]] == ["photos/S/p6.png", "photos/S/p5.png"]


def test_photos_are_embedded_pixel_for_pixel_and_drawn_three_times_larger():
    page = _render(_photos(per_grade=3))
    cards = [card for s in page.sections.values() for card in s["cards"]]
    for card in cards:
        index = int(card["alt"].split(":")[0].removesuffix(".png").rsplit("/p", 1)[1])
        assert np.array_equal(_pixels(card["src"]), np.full((32, 32, 3), 10 * index, np.uint8))
        assert card["width"] == "96"


def test_matrix_links_every_non_zero_cell_to_a_section_of_its_photos():
    page = _render(_photos(per_grade=1))
    # confusion: L -> L 1, L -> M 1, L -> S 1; M -> L 1, M -> M 1; S -> S 2
    assert page.links == [
        ("#cell-0-0", "1"),
        ("#cell-0-1", "1"),
        ("#cell-0-2", "1"),
        ("#cell-1-0", "1"),
        ("#cell-1-1", "1"),
        ("#cell-2-2", "2"),
    ]
    for href, count in page.links:
        section = page.sections[href[1:]]
        t, p = (int(k) for k in href.removeprefix("#cell-").split("-"))
        assert section["data-true"] == NAMES[t] and section["data-predicted"] == NAMES[p]
        assert section["data-count"] == count
        assert len(section["cards"]) == 1  # the cap, even where the cell counts 2
        assert all((c["data-true"], c["data-predicted"]) == (NAMES[t], NAMES[p]) for c in section["cards"])
    assert [c["alt"].split(":")[0] for c in page.sections["cell-2-2"]["cards"]] == ["photos/S/p6.png"]


def test_names_and_sources_are_escaped():
    photos = _photos(per_grade=1)
    photos = GalleryPhotos(photos.images, ["a&b<1>.png"] * 7, photos.y_true, photos.scores, photos.predicted, 1)
    page = html.render_report("t", gallery_blocks(photos, ["<L>", "M", "S"]))
    assert "<L>" not in page and "&lt;L&gt;" in page and "a&amp;b&lt;1&gt;.png" in page
    assert _Page(page).sections["grade-0"]["data-grade"] == "<L>"


def test_large_photos_are_shrunk_and_memory_mapped_rows_are_read():
    big = np.random.default_rng(0).integers(0, 255, (7, 300, 300, 3), dtype=np.uint8)
    assert _pixels(png_data_uri(big[0])).shape == (112, 112, 3)
    rows = ImageRows(np.concatenate([big, big]), np.arange(7, 14))
    page = _render(_photos(per_grade=1, images=rows))
    card = page.sections["grade-0"]["cards"][0]  # photo 2, the worst L
    assert card["width"] == "112" and _pixels(card["src"]).shape == (112, 112, 3)


@pytest.mark.parametrize("per_grade", [1, 8])
def test_page_size_is_bounded_by_the_cap(per_grade):
    rng = np.random.default_rng(1)
    n, names = 400, [f"g{k}" for k in range(5)]
    y = rng.integers(0, 5, n)
    predicted = np.clip(y + rng.integers(-1, 2, n), 0, 4)
    images = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    photos = GalleryPhotos(images, [f"p{i}" for i in range(n)], y, predicted + 0.2, predicted, per_grade)
    page = _Page(html.render_report("t", gallery_blocks(photos, names)))
    shown = [card for s in page.sections.values() for card in s["cards"]]
    cells = sum(1 for s in page.sections.values() if s["class"] == "cell")
    assert len(shown) == per_grade * (len(names) + cells)  # every grade and cell holds more photos than the cap

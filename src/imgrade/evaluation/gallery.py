"""The photos a report shows: a confusion matrix whose cells link to the photos they count, and
each true grade's worst-graded photos.

Arrays in, report blocks out. Every photo is embedded as a PNG data URI, so the report stays one
file; at most ``per_grade`` photos are shown for each grade and for each cell of the matrix.
Small photos (CUCUMBER-9's are 32x32) are drawn an integer number of times larger with square
pixels, so what the network saw is what the page shows.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np

from imgrade.evaluation import html as report
from imgrade.evaluation.metrics import confusion_matrix

DEFAULT_PER_GRADE = 8
"""Photos shown per true grade and per confusion cell unless told otherwise (``evaluate --gallery``)."""
SHOWN_PX = 112
"""Photos are drawn at most this many pixels wide (eight cards to a row of the page); larger ones are
shrunk to it before embedding, smaller ones drawn a whole number of times larger (32 px at 96 px)."""
LOSS = "the most grades off first, then the score farthest from the true grade"
"""How the gallery ranks photos, as the report says it."""


@dataclass(frozen=True)
class GalleryPhotos:
    """The graded photos a report's gallery draws from, one row per photo."""

    images: np.ndarray
    """uint8 (N, H, W, 3) RGB, or the ``ImageRows`` of a memory-mapped set: only the shown rows are read."""
    ids: list[str]
    """Where each photo came from: a file path, or ``data_batch_1:17`` for batch files."""
    y_true: np.ndarray
    """(N,) true grade indices."""
    scores: np.ndarray
    """(N,) scores on the grade axis."""
    predicted: np.ndarray
    """(N,) the grade indices the model decided."""
    per_grade: int = DEFAULT_PER_GRADE
    """At most this many photos per true grade and per cell of the confusion matrix; 0 shows none."""


def worst_first(y_true, scores, predicted) -> np.ndarray:
    """Indices of the photos, worst-graded first: the most grades off, then the score farthest from the true grade.

    >>> worst_first([0, 0, 1, 2], [0.4, 1.2, 1.0, 0.6], [0, 1, 1, 1]).tolist()
    [3, 1, 0, 2]
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    grades_off = np.abs(np.asarray(predicted, dtype=np.float64) - y_true)
    score_off = np.abs(np.asarray(scores, dtype=np.float64) - y_true)
    return np.lexsort((-score_off, -grades_off))  # the last key sorts first; ties keep their order


def png_data_uri(image: np.ndarray, max_px: int = SHOWN_PX) -> str:
    """One uint8 (H, W, 3) photo as a ``data:image/png`` URI, shrunk to at most ``max_px`` on its longer side.

    >>> uri = png_data_uri(np.zeros((32, 32, 3), np.uint8))
    >>> uri.startswith("data:image/png;base64,iVBORw0KGgo"), len(uri) < 400
    (True, True)
    """
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if max(picture.size) > max_px:
        picture.thumbnail((max_px, max_px), Image.Resampling.BOX)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def shown_size(height: int, width: int, max_px: int = SHOWN_PX) -> tuple[int, int]:
    """How large a photo is drawn: the largest whole multiple of its size within ``max_px`` (or ``max_px`` itself).

    >>> shown_size(32, 32), shown_size(40, 30), shown_size(300, 150)
    ((96, 96), (80, 60), (112, 56))
    """
    scale = max(height, width)
    if scale > max_px:
        return round(height * max_px / scale), round(width * max_px / scale)
    times = max_px // scale
    return height * times, width * times


def gallery_blocks(photos: GalleryPhotos, grade_names: list[str]) -> list[report.Block]:
    """The report's photo sections: the linked confusion matrix, each true grade's worst photos, each cell's photos."""
    y_true = np.asarray(photos.y_true, dtype=np.int64)
    predicted = np.asarray(photos.predicted, dtype=np.int64)
    order = worst_first(y_true, photos.scores, predicted)
    limit = photos.per_grade
    confusion = confusion_matrix(y_true, predicted, len(grade_names))
    cards = _Cards(photos, grade_names)

    grade_sections = []
    for k, name in enumerate(grade_names):
        rows = order[y_true[order] == k][:limit].tolist()
        total = int(confusion[k].sum())
        title = f"{name}: {_shown(len(rows), total)}" if total else f"{name}: no photos"
        grade_sections.append(
            f'<section class="grade" id="grade-{k}" data-grade="{_escape(name)}">'
            f"<h3>{_escape(title)}</h3>{cards.row(rows)}</section>"
        )
    cell_sections = []
    for t, p in zip(*np.nonzero(confusion)):
        rows = order[(y_true[order] == t) & (predicted[order] == p)][:limit].tolist()
        count = int(confusion[t, p])
        title = f"true {grade_names[t]}, graded {grade_names[p]}: {_shown(len(rows), count)}"
        cell_sections.append(
            f'<section class="cell" id="cell-{t}-{p}" data-true="{_escape(grade_names[t])}" '
            f'data-predicted="{_escape(grade_names[p])}" data-count="{count}">'
            f'<h3>{_escape(title)} <a class="back" href="#confusion-links">back to the matrix</a></h3>'
            f"{cards.row(rows)}</section>"
        )
    return [
        report.heading("Which grades it confuses"),
        report.text("Click a count to see the photos of that cell, and judge whether the model or the label is wrong."),
        report.markup(_linked_matrix(confusion, grade_names)),
        report.heading("Photos it gets wrong"),
        report.text(
            f"For each true grade, the {limit} photos graded worst ({LOSS}); a red frame marks a wrong grade. "
            "Each card shows the true grade, the grade given, the score and where the photo came from."
        ),
        report.markup("\n".join(grade_sections)),
        report.heading("The photos of each cell"),
        report.text(f"The {limit} worst photos of each cell of the confusion matrix above."),
        report.markup("\n".join(cell_sections)),
    ]


class _Cards:
    """Draws photo cards, encoding each photo once, though it may show in its grade and in its cell."""

    def __init__(self, photos: GalleryPhotos, grade_names: list[str]):
        self.photos, self.grade_names = photos, grade_names
        self.uris: dict[int, str] = {}

    def row(self, rows: list[int]) -> str:
        if not rows:
            return ""
        missing = [i for i in rows if i not in self.uris]
        if missing:
            images = self.photos.images[np.asarray(missing, dtype=np.int64)]  # reads only these rows
            self.uris.update((i, png_data_uri(image)) for i, image in zip(missing, images))
        height, width = self.photos.images.shape[1:3]
        return '<div class="photos">' + "".join(self._card(i, *shown_size(height, width)) for i in rows) + "</div>"

    def _card(self, i: int, height: int, width: int) -> str:
        true = self.grade_names[int(self.photos.y_true[i])]
        given = self.grade_names[int(self.photos.predicted[i])]
        source = str(self.photos.ids[i])
        short = source.replace("\\", "/").rsplit("/", 1)[-1]
        state = "right" if true == given else "wrong"
        return (
            f'<figure class="photo {state}" data-true="{_escape(true)}" data-predicted="{_escape(given)}" '
            f'style="width: {width + 12}px"><img src="{self.uris[i]}" width="{width}" height="{height}" '
            f'alt="{_escape(f"{source}: true {true}, graded {given}")}">'
            f'<figcaption><span class="grades">{_escape(true)} &rarr; {_escape(given)}</span>'
            f'<span class="score">score {float(self.photos.scores[i]):.2f}</span>'
            f'<span class="source" title="{_escape(source)}">{_escape(short).replace(":", ":<wbr>")}</span>'
            "</figcaption></figure>"
        )


def _shown(shown: int, total: int) -> str:
    """How many photos a section shows of how many.

    >>> _shown(1, 1), _shown(3, 3), _shown(8, 20)
    ('1 photo', 'all 3 photos, the worst first', 'the 8 worst of 20 photos')
    """
    if shown == total:
        return "1 photo" if total == 1 else f"all {total} photos, the worst first"
    return f"the {shown} worst of {total} photos"


def _linked_matrix(confusion: np.ndarray, grade_names: list[str]) -> str:
    """The confusion matrix as a table whose non-zero counts link to their cell's photos."""
    header = "".join(f'<th scope="col" class="num">{_escape(name)}</th>' for name in grade_names)
    lines = [
        '<div class="table-wrap"><table class="confusion" id="confusion-links">',
        "<caption>rows: true grade; columns: the grade given</caption>",
        f'<thead><tr><th scope="col">true \\ given</th>{header}</tr></thead><tbody>',
    ]
    for t, name in enumerate(grade_names):
        total = max(int(confusion[t].sum()), 1)
        cells = []
        for p, count in enumerate(confusion[t]):
            kind = "diagonal" if t == p else "off"
            if count:
                shade = f' style="--share: {count / total:.2f}"'
                link = f'<a href="#cell-{t}-{p}">{int(count)}</a>'
                cells.append(f'<td class="num {kind} filled"{shade}>{link}</td>')
            else:
                cells.append(f'<td class="num {kind}">0</td>')
        lines.append(f'<tr><th scope="row">{_escape(name)}</th>{"".join(cells)}</tr>')
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _escape(value) -> str:
    return html.escape(str(value), quote=True)

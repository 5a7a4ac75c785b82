"""A self-contained HTML report: one file with inline CSS and embedded pictures, readable offline.

A report is a list of blocks (heading, text, table, key/value table, image, preformatted
text, and markup that another module of this package built and escaped) made by the functions below and turned into a page by ``render_report``. The page
needs no network and no JavaScript: pictures are base64 data URIs, and a Content-Security-Policy
forbids the browser from fetching anything else. All text is escaped, so a grade name or a
caption can hold ``<`` or ``&`` safely.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imgrade.core.io import atomic_write
from imgrade.core.version import __version__

KINDS = ("heading", "text", "table", "image", "pre", "kv", "markup")
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Block:
    """One piece of a report; build it with ``heading``, ``text``, ``table``, ``kv``, ``image`` or ``pre``."""

    kind: str
    """One of KINDS."""
    text: str = ""
    """heading/text/pre: the text itself; image: the data URI, or "" when the file was missing; markup: HTML."""
    caption: str | None = None
    """Shown above a table or preformatted text, below an image; an image's alt text and id."""
    header: tuple[str, ...] = ()
    """table: the column names."""
    rows: tuple[tuple[str, ...], ...] = ()
    """table and kv: the cells, already formatted as text."""
    highlight_row: int | None = None
    """table: the index of a row to emphasise (e.g. the reference formulation)."""
    source: str = ""
    """image: the file it was read from."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Block kind {self.kind!r} is unknown; use one of {', '.join(KINDS)}")


def heading(text: str) -> Block:
    """A section heading."""
    return Block("heading", text=str(text))


def text(paragraph: str) -> Block:
    """A paragraph of plain text (escaped, so markup shows as typed)."""
    return Block("text", text=str(paragraph))


def table(header: list[str], rows: list[list], caption: str | None = None, highlight_row: int | None = None) -> Block:
    """A table; integers print as they are, other numbers with 3 decimals, None (and NaN) as "-".

    >>> table(["model", "mae", "n"], [["ordinal", 0.41234, 120], ["regression", None, 120]]).rows
    (('ordinal', '0.412', '120'), ('regression', '-', '120'))
    """
    header = tuple(str(name) for name in header)
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {index} has {len(row)} cells but the header names {len(header)} columns")
    if highlight_row is not None and not 0 <= highlight_row < len(rows):
        raise ValueError(f"highlight_row {highlight_row} is outside the table's {len(rows)} rows")
    cells = tuple(tuple(format_cell(value) for value in row) for row in rows)
    return Block("table", caption=caption, header=header, rows=cells, highlight_row=highlight_row)


def kv(pairs: dict, caption: str | None = None) -> Block:
    """A two-column table of names and values, formatted as in ``table``.

    >>> kv({"epochs": 20, "lr": 0.001}).rows
    (('epochs', '20'), ('lr', '0.001'))
    """
    return Block("kv", caption=caption, rows=tuple((str(key), format_cell(value)) for key, value in pairs.items()))


def image(path: str | os.PathLike, caption: str) -> Block:
    """A picture read now and embedded in the page; a missing file becomes a visible note, not an error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Block("image", caption=str(caption), source=str(path))
    mime = _IMAGE_TYPES.get(path.suffix.lower(), "image/png")
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return Block("image", text=uri, caption=str(caption), source=str(path))


def pre(text: str, caption: str | None = None) -> Block:
    """Preformatted text kept as written, e.g. the resolved YAML config."""
    return Block("pre", text=str(text), caption=caption)


def markup(fragment: str) -> Block:
    """HTML put into the page as it is: only for markup built (and escaped) in this package, such as the gallery."""
    return Block("markup", text=str(fragment))


def format_cell(value) -> str:
    """How a table shows a value: ints as is, other numbers with 3 decimals, None and NaN as "-".

    Non-zero numbers below 0.001 keep 3 significant digits instead.

    >>> [format_cell(v) for v in (3, 0.5, None, float("nan"), 2e-5, True, "2L")]
    ['3', '0.500', '-', '-', '2e-05', 'True', '2L']
    """
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "-"
        # 3 decimals would print a learning rate of 1e-4 as 0.000; tiny values keep 3 significant digits.
        return f"{value:.3g}" if 0 < abs(value) < 0.001 else f"{value:.3f}"
    return str(value)


def slug(text: str) -> str:
    """An id for an HTML element: lower case letters, digits and dashes.

    >>> slug("Predicted vs true (test, n=120)")
    'predicted-vs-true-test-n-120'
    """
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "section"


def render_report(title: str, blocks: list[Block], subtitle: str | None = None) -> str:
    """The whole page as one HTML string; consecutive images share a two-column grid.

    >>> page = render_report("Run <1>", [heading("Metrics"), table(["mae"], [[0.25]])])
    >>> "<h1>Run &lt;1&gt;</h1>" in page and '<td class="num">0.250</td>' in page
    True
    """
    ids: set[str] = set()
    body: list[str] = []
    index = 0
    while index < len(blocks):
        if blocks[index].kind == "image":
            group = []
            while index < len(blocks) and blocks[index].kind == "image":
                group.append(_render_image(blocks[index], _unique(slug(blocks[index].caption), ids)))
                index += 1
            body.append('<div class="figures">\n' + "\n".join(group) + "\n</div>")
            continue
        block = blocks[index]
        if block.kind == "heading":
            body.append(f'<h2 id="{_unique(slug(block.text), ids)}">{_escape(block.text)}</h2>')
        elif block.kind == "text":
            body.append(f"<p>{_escape(block.text)}</p>")
        elif block.kind in ("table", "kv"):
            body.append(_render_table(block))
        elif block.kind == "markup":
            body.append(block.text)
        else:
            caption = f"<figcaption>{_escape(block.caption)}</figcaption>" if block.caption else ""
            body.append(f'<figure class="pre">{caption}<pre>{_escape(block.text)}</pre></figure>')
        index += 1

    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    subtitle_html = f'\n<p class="subtitle">{_escape(subtitle)}</p>' if subtitle else ""
    return _PAGE.format(
        title=_escape(title),
        subtitle=subtitle_html,
        body="\n".join(body),
        version=_escape(__version__),
        generated=_escape(generated),
        style=_STYLE,
    )


def write_report(path: str | os.PathLike, title: str, blocks: list[Block], subtitle: str | None = None) -> Path:
    """Render the page and write it atomically as UTF-8; returns the path."""
    page = render_report(title, blocks, subtitle=subtitle)
    with atomic_write(path, "wb") as f:
        f.write(page.encode("utf-8"))
    return Path(path)


def _escape(value) -> str:
    return html.escape(str(value), quote=True)


def _unique(candidate: str, used: set[str]) -> str:
    """``candidate``, or ``candidate-2``, ``-3``... when an earlier element already took it."""
    name, number = candidate, 2
    while name in used:
        name, number = f"{candidate}-{number}", number + 1
    used.add(name)
    return name


def _render_image(block: Block, element_id: str) -> str:
    caption = _escape(block.caption)
    if not block.text:
        return (
            f'<figure class="missing" id="{element_id}"><div class="note">missing picture: '
            f"{_escape(block.source)}</div><figcaption>{caption}</figcaption></figure>"
        )
    return (
        f'<figure><img id="{element_id}" src="{block.text}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
    )


def _render_table(block: Block) -> str:
    lines = ['<div class="table-wrap"><table>']
    if block.caption:
        lines.append(f"<caption>{_escape(block.caption)}</caption>")
    if block.kind == "table":
        # A column of numbers gets a right-aligned header, over its right-aligned values.
        cells = []
        for column, name in enumerate(block.header):
            numeric = bool(block.rows) and all(_is_number(row[column]) for row in block.rows)
            align = ' class="num"' if numeric else ""
            cells.append(f'<th scope="col"{align}>{_escape(name)}</th>')
        lines.append("<thead><tr>" + "".join(cells) + "</tr></thead>")
    lines.append("<tbody>")
    for index, row in enumerate(block.rows):
        row_class = ' class="highlight"' if index == block.highlight_row else ""
        if block.kind == "kv":
            cells = f'<th scope="row">{_escape(row[0])}</th>' + _cell(row[1])
        else:
            cells = "".join(_cell(value) for value in row)
        lines.append(f"<tr{row_class}>{cells}</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _cell(value: str) -> str:
    """Numbers align right so their decimals line up."""
    return f'<td class="num">{_escape(value)}</td>' if _is_number(value) else f"<td>{_escape(value)}</td>"


def _is_number(cell: str) -> bool:
    return cell == "-" or re.fullmatch(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", cell) is not None


_STYLE = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5d6673; --line: #d9dee5; --zebra: #f4f6f9;
        --accent: #1f5fa8; --mark: #fff3d6; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px 20px 40px; color: var(--ink); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
p { margin: 8px 0; max-width: 75ch; }
.subtitle { color: var(--muted); margin-top: 0; }
.table-wrap { overflow-x: auto; margin: 12px 0 18px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 6px; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #aab3bf; background: #eef1f5; }
tbody tr:nth-child(even) { background: var(--zebra); }
tbody th { font-weight: 600; }
td.num, th.num { text-align: right; }
tr.highlight, tr.highlight:nth-child(even) { background: var(--mark); font-weight: 600; }
.figures { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; margin: 14px 0 22px; align-items: start; }
.figures > figure:last-child:nth-child(odd) { grid-column: 1 / -1; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; text-align: center; padding-top: 4px; }
figure.pre { margin: 12px 0 18px; }
figure.pre figcaption { text-align: left; font-weight: 600; color: var(--ink); padding: 0 0 6px; }
pre { margin: 0; padding: 10px 12px; background: var(--zebra); border: 1px solid var(--line); border-radius: 4px;
      overflow-x: auto; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
figure.missing .note { padding: 28px 12px; text-align: center; color: #8a1c1c; background: #fdecec;
                       border: 1px dashed #d08a8a; border-radius: 4px; }
h3 { font-size: 1.05em; margin: 18px 0 6px; }
.photos { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 14px; }
figure.photo { margin: 0; padding: 4px; border: 2px solid var(--line); border-radius: 4px; font-size: 0.8em;
               line-height: 1.35; }
figure.photo.wrong { border-color: #c0392b; }
figure.photo img { image-rendering: pixelated; border: 0; max-width: none; }
figure.photo figcaption { text-align: left; color: var(--ink); font-size: 1em; padding-top: 3px; }
figure.photo .grades { display: block; font-weight: 600; }
figure.photo .score { display: block; }
figure.photo .source { display: block; color: var(--muted); font-size: 0.92em; overflow-wrap: anywhere; }
table.confusion td { text-align: center; min-width: 3.2em; color: #9aa3ae; }
table.confusion td.filled { background: rgb(31 95 168 / calc(0.08 + 0.5 * var(--share))); }
table.confusion td.diagonal { box-shadow: inset 0 0 0 2px #9fb6d3; }
table.confusion a { display: block; color: var(--ink); font-weight: 600; text-decoration: none; }
table.confusion a:hover { text-decoration: underline; }
section.cell { scroll-margin-top: 8px; }
section.cell:target { outline: 3px solid var(--accent); outline-offset: 4px; border-radius: 2px; }
h3 a.back { font-size: 0.85em; font-weight: normal; margin-left: 10px; color: var(--accent); }
footer { margin-top: 40px; padding-top: 8px; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 0.85em; }
@media (max-width: 760px) {
  body { padding: 14px 10px 28px; }
  .figures { grid-template-columns: 1fr; }
}
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  h2 { break-after: avoid; }
  figure, tr, .table-wrap { break-inside: avoid; }
  pre { white-space: pre-wrap; }
  .table-wrap { overflow: visible; }
}
"""

# The Content-Security-Policy lets the page load nothing but its own styles and data-URI images.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="generator" content="imgrade {version}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>{title}</h1>{subtitle}
</header>
<main>
{body}
</main>
<footer>Generated by imgrade {version} on {generated}.</footer>
</body>
</html>
"""

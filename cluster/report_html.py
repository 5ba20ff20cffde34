"""The run report's page: HTML pieces in order, figures rendered to PNG, one self-contained file.

Example::

    doc = Doc()
    doc.add("<h2>Spectrum</h2>")
    doc.figure("spectrum", "Mean spectrum", lambda: png_bytes)
    render_figures(doc.figures, progress=False)
    html_text = page("quickstart", doc)

Sections (:mod:`cluster.report`) add text and figures; this module knows only
HTML. Every table cell that holds a run's number carries ``data-key``; a figure
given ``data`` carries the numbers it plots in ``data-values`` (JSON, ``null`` for
a gap), so a test or a script reads a curve without decoding the PNG; an inline
script writes the count of loaded images into ``<body data-images-loaded>`` (an
attribute, so no check text shows on the page).
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from .json_safe import json_safe

__all__ = ["DEFAULT_REPORT_DIR", "Doc", "Figure", "esc", "fmt", "page", "render_figures", "slug", "table"]

DEFAULT_REPORT_DIR = "gangeo-reports"  # where `gangeo report RUN` writes without --out (RUN's folder in it)


@dataclass
class Figure:
    slug: str
    caption: str
    render: Callable[[], bytes]
    png: bytes = b""
    data: dict | None = None  # the plotted numbers, written into the page as JSON


@dataclass
class Doc:
    """The report being assembled: HTML pieces in order, figures rendered later."""

    parts: list = field(default_factory=list)
    figures: list = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, name: str, caption: str, render: Callable[[], bytes], data: dict | None = None) -> None:
        fig = Figure(slug(name), caption, render, data=data)
        self.figures.append(fig)
        self.parts.append(fig)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "figure"


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(x) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return "nan" if not np.isfinite(x) else f"{x:.4g}"


def _plain_json(x) -> str:
    """Strict, compact JSON; NaN and infinities are ``null``."""
    return json.dumps(json_safe(x), allow_nan=False, separators=(",", ":"))


def table(header: list[str], rows: list[list], keys: list[list[str | None]] | None = None) -> str:
    """An HTML table; cell (r, c) gets ``data-key=keys[r][c]`` when given."""
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        out.append("<tr>")
        for c, cell in enumerate(row):
            key = keys[r][c] if keys else None
            attr = f' data-key="{esc(key)}"' if key else ""
            text = fmt(cell) if isinstance(cell, (int, float, np.integer, np.floating)) else str(cell)
            out.append(f"<td{attr}>{esc(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 8px;text-align:right;font-size:13px}th{background:#eee}
figure{margin:1em 0}figure img{max-width:100%}pre{background:#f6f6f6;padding:.5em;font-size:12px}
.note{color:#a33}section{border-top:2px solid #ccc;margin-top:1.5em}"""

# On load, the counts of decoded images and of tables go into <body>'s data attributes, not onto the
# page: a headless browser's --dump-dom shows whether every figure decoded; a reader sees nothing.
_SELFCHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", String(ok));
  document.body.setAttribute("data-images-total", String(imgs.length));
  document.body.setAttribute("data-tables", String(document.querySelectorAll("table").length));
});
</script>"""


def page(run: str, doc: Doc) -> str:
    body = []
    for part in doc.parts:
        if isinstance(part, Figure):
            data = base64.b64encode(part.png).decode("ascii")
            values = f' data-values="{esc(_plain_json(part.data))}"' if part.data is not None else ""
            body.append(f'<figure{values}><img alt="{esc(part.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(part.caption)} ({esc(part.slug)}.png)</figcaption></figure>")
        else:
            body.append(part)
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gangeo report: {esc(run)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>Run {esc(run)}</h1><p>Report made {made}.</p>"
            + "".join(body) + _SELFCHECK + "</body></html>")


def render_figures(figures: list[Figure], progress: bool, command: str = "report") -> None:
    """Draw every figure; ``progress``: a bar on a terminal, a line per figure elsewhere (stderr)."""
    from .progress import Steps

    with Steps(command, enabled=progress).over(len(figures), "figure") as step:
        for fig in figures:
            fig.png = fig.render()
            step(fig.slug)

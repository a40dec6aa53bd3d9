"""Pictures and tables shared by the CLI, notebooks and reports.

Images: tensors [B, 3, H, W] in a value range (default [-1, 1]) -> one uint8 grid (``grid``), PNG files or bytes,
or a PNG shown in a notebook (``show``). Tables: ``table(rows)`` renders as HTML in a notebook and as aligned text
when printed.
"""
from __future__ import annotations

import html
import io
import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor, value_range=(-1.0, 1.0)) -> np.ndarray:
    """[B, 3, H, W] float in ``value_range`` -> [B, H, W, 3] uint8 (values outside the range are clipped)."""
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def grid(images: torch.Tensor, nrow: int, value_range=(-1.0, 1.0), padding: int = 2) -> np.ndarray:
    """Tile [B, 3, H, W] images row-major into one [H', W', 3] uint8 array (``nrow`` images per row).

    Images are separated (and framed) by ``padding`` white pixels; the last row is padded with white cells.
    """
    import torchvision

    x = ((images.detach().float().cpu() - value_range[0]) / (value_range[1] - value_range[0])).clamp(0, 1)
    g = torchvision.utils.make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)
    return (g.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(array: np.ndarray, path) -> Path:
    """Write an [H, W, 3] uint8 array as a PNG (parent folders are created); returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """The PNG encoding of an [H, W, 3] uint8 array (Pillow; ``compress_level`` 0-9, 6 is Pillow's default, 1
    favours speed over size: the face editor's 256 x 768 panel encodes in a few ms). Raises ``ValueError`` for
    another dtype or shape."""
    from PIL import Image

    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"png_bytes: expected a uint8 image [H, W, 3], found {a.dtype} {list(a.shape)}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def show(images: torch.Tensor | np.ndarray, nrow: int = 8, value_range=(-1.0, 1.0), scale: int = 1):
    """Display one composed PNG in a notebook (rather than many matplotlib figures).

    ``images``: [B, 3, H, W] tensor in ``value_range`` (tiled by ``grid``) or an [H, W, 3] uint8 array;
    ``scale``: integer nearest-neighbour upscaling, so that small faces stay visible.
    """
    from IPython.display import Image, display

    arr = images if isinstance(images, np.ndarray) else grid(images, nrow, value_range)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    display(Image(data=png_bytes(arr), format="png"))


def _cell(value, floatfmt: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else floatfmt.format(value)
    return str(value)


class Table:
    """Rows shown as an HTML table in a notebook (``_repr_html_``) and as aligned text when printed (``str``).

    Build it with :func:`table`. ``rows`` is a list of dicts; ``columns`` (default: the keys of the first row, in
    order) picks and orders the columns; a row without a column's key shows an empty cell. Floats use
    ``floatfmt`` (NaN shows as "–"), booleans "yes"/"no", anything else ``str()``.
    """

    def __init__(self, rows, columns=None, floatfmt: str = "{:.4g}"):
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = list(self.rows[0]) if self.rows else []
        self.columns = [str(c) for c in columns]
        self.floatfmt = floatfmt

    def cells(self) -> list[list[str]]:
        """The formatted body: one list of strings per row, in column order."""
        return [[_cell(r.get(c, ""), self.floatfmt) for c in self.columns] for r in self.rows]

    def html(self) -> str:
        """The table as an HTML ``<table>`` (header row first; every cell HTML-escaped)."""
        style = "style='text-align:left;padding:2px 8px'"
        head = "".join(f"<th {style}>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td {style}>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self.cells())
        return f"<table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"

    _repr_html_ = html

    def __str__(self) -> str:
        cells = self.cells()
        width = [max([len(c)] + [len(row[k]) for row in cells]) for k, c in enumerate(self.columns)]
        numeric = [all(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in self.rows)
                   and bool(self.rows) for c in self.columns]

        def line(values):
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, width, numeric, strict=True)).rstrip()

        return "\n".join([line(self.columns)] + [line(row) for row in cells])

    __repr__ = __str__


def table(rows, columns=None, floatfmt: str = "{:.4g}") -> Table:
    """A :class:`Table` of ``rows`` (list of dicts): HTML in a notebook, aligned text with ``print``.

    In a notebook, ``display(table(rows))`` (or a cell ending in ``table(rows)``) shows the HTML table.
    """
    return Table(rows, columns, floatfmt)

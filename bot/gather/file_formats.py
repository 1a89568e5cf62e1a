"""Reading structured files as text: Office documents (DOCX, XLSX, PPTX) and HTML.

Office files are zips of XML, so every one is checked before it is opened: the sizes its
entries unpack to (which Python's zipfile enforces while reading) must stay within a limit,
or a small upload could unpack to gigabytes. Spreadsheets are read in openpyxl's read-only
mode, sheet by sheet, with caps on the rows and cells looked at, since a sheet's XML may
claim any row or column number; formulas are never evaluated (their cached values are
read) and macros are never loaded. XML entity declarations are refused (openpyxl parses
through defusedxml) or left unexpanded (python-docx and python-pptx parse with
`resolve_entities=False`). Problems raise `FormatError`, which bot.gather.files turns into
a sentence for the uploader.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

# A zip may unpack to at most this many times the file cap, and never more than this.
MAX_UNPACK_RATIO = 100
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
# Spreadsheets: rows (empty ones included: a sheet may jump to row 10^12) and cells (padded
# rows included: a sheet may put one cell in column ZZZ) looked at, over all sheets.
MAX_SHEET_ROWS = 2_000_000
MAX_SHEET_CELLS = 5_000_000
# Presentations: shapes looked at, and how deep groups of shapes may nest.
MAX_SHAPES = 200_000
MAX_GROUP_DEPTH = 32

# What the model reads where a file's text was cut short.
TRUNCATED = "[… the rest of this file is not read: it is over the limit of {limit} of text]"
SHEET_CAPPED = "[… the rest of this workbook is not read: it has more cells than I read]"

# Where each kind of Office file keeps its main part.
_OFFICE_MAIN_PARTS = {
    "word/document.xml": "docx",
    "xl/workbook.xml": "xlsx",
    "ppt/presentation.xml": "pptx",
}


class FormatError(Exception):
    """A file that cannot be read: `kind` is a key of bot.gather.files.MESSAGES, `fields`
    fill its sentence."""

    def __init__(self, kind: str, **fields: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.fields = fields


def office_kind(data: bytes) -> str | None:
    """ "docx", "xlsx" or "pptx" when `data` is a zip holding that kind's main part."""
    if not data.startswith(b"PK\x03\x04"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError):
        return None
    for part, kind in _OFFICE_MAIN_PARTS.items():
        if part in names:
            return kind
    return None


def unpack_limit(max_bytes: int) -> int:
    return min(max_bytes * MAX_UNPACK_RATIO, MAX_UNPACKED_BYTES)


def check_unpacked(data: bytes, max_bytes: int, corrupt: str) -> None:
    """FormatError unless `data` is a zip whose entries unpack to at most `unpack_limit`."""
    limit = unpack_limit(max_bytes)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except Exception:
        raise FormatError(corrupt) from None
    if unpacked > limit:
        raise FormatError("unpacks_too_big", limit=human_size(limit))


def human_size(n: int) -> str:
    """A byte count as people write it: "512 bytes", "3 KB", "1.5 MB"."""
    if n < 0:
        raise ValueError(f"A size cannot be negative; got {n}.")
    if n < 1024:
        return "1 byte" if n == 1 else f"{n} bytes"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        rounded = round(value, 1)
        if rounded < 1024 or unit == "TB":
            return f"{rounded:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


class _Capped:
    """Lines of text up to `limit` characters; `full` once one did not fit."""

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.limit = limit
        self.used = 0
        self.full = False

    def add(self, line: str) -> bool:
        if self.full:
            return False
        if self.used + len(line) + 1 > self.limit:
            self.full = True
            self.lines.append(TRUNCATED.format(limit=human_size(self.limit)))
            return False
        self.lines.append(line)
        self.used += len(line) + 1
        return True

    def text(self) -> str:
        return "\n".join(self.lines)


# DOCX


def docx_text(data: bytes, max_bytes: int) -> str:
    import docx  # imported here: only DOCX files pay for it

    check_unpacked(data, max_bytes, "docx_corrupt")
    try:
        document = docx.Document(io.BytesIO(data))
        return "\n".join(_docx_blocks(document))
    except Exception:
        raise FormatError("docx_corrupt") from None


def _docx_blocks(container: Any) -> list[str]:
    """Paragraphs as lines and table rows as "cell | cell", in document order."""
    from docx.table import Table

    lines: list[str] = []
    for block in container.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells, seen = [], set()
                for cell in row.cells:
                    # A merged cell is returned once per grid column it spans.
                    if id(cell._tc) in seen:
                        continue
                    seen.add(id(cell._tc))
                    cells.append(" ".join(" ".join(_docx_blocks(cell)).split()))
                if any(cells):
                    lines.append(" | ".join(cells))
        elif block.text.strip():
            lines.append(block.text)
    return lines


# XLSX


def xlsx_text(data: bytes, max_bytes: int) -> str:
    """Every sheet, headed by its name, its non-empty rows as tab-separated values."""
    import openpyxl  # imported here: only spreadsheets pay for it

    check_unpacked(data, max_bytes, "xlsx_corrupt")
    out = _Capped(max_bytes)
    try:
        # data_only: a formula's value as Excel last saved it, never the formula evaluated;
        # keep_vba is off by default: macros are not even loaded.
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise FormatError(_xml_trick_or(exc, "xlsx_corrupt")) from None
    try:
        _sheets(book, out)
    except FormatError:
        raise
    except Exception as exc:
        raise FormatError(_xml_trick_or(exc, "xlsx_corrupt")) from None
    finally:
        book.close()
    return out.text()


def _sheets(book: Any, out: _Capped) -> None:
    rows = cells = 0
    for sheet in book.worksheets:
        if not hasattr(sheet, "iter_rows"):  # a chart sheet: no cells
            continue
        if not out.add(f"## Sheet: {sheet.title}"):
            return
        # The sheet's own dimensions may be wrong or hostile: read only the rows it has.
        sheet.reset_dimensions()
        for row in sheet.iter_rows(values_only=True):
            rows += 1
            cells += len(row)
            if rows > MAX_SHEET_ROWS or cells > MAX_SHEET_CELLS:
                out.lines.append(SHEET_CAPPED)
                return
            values = [_cell_text(value) for value in row]
            while values and not values[-1]:
                values.pop()
            if values and not out.add("\t".join(values)):
                return
        out.add("")


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time | dt.datetime):
        return value.isoformat()
    return " ".join(str(value).split())  # tabs and newlines in a cell would break the row


def _xml_trick_or(exc: BaseException, kind: str) -> str:
    # defusedxml's refusals (DTDForbidden, EntitiesForbidden, ...) all derive from this.
    try:
        from defusedxml import DefusedXmlException
    except ImportError:
        return kind
    seen: BaseException | None = exc
    while seen is not None:  # openpyxl wraps what the parser raised in a ValueError
        if isinstance(seen, DefusedXmlException):
            return "xml_entities"
        seen = seen.__cause__ or seen.__context__
    return kind


# PPTX


def pptx_text(data: bytes, max_bytes: int) -> str:
    """Each slide's text (text frames, tables, grouped shapes) and its speaker notes."""
    import pptx  # imported here: only presentations pay for it

    check_unpacked(data, max_bytes, "pptx_corrupt")
    out = _Capped(max_bytes)
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
        slides = list(presentation.slides)
        shapes = 0
        for number, slide in enumerate(slides, start=1):
            lines = []
            for text in _shape_texts(slide.shapes, 0):
                shapes += 1
                if shapes > MAX_SHAPES:
                    out.lines.append(TRUNCATED.format(limit=f"{MAX_SHAPES:,} shapes"))
                    return out.text()
                lines.append(text)
            if slide.has_notes_slide:
                frame = slide.notes_slide.notes_text_frame
                if frame is not None and frame.text.strip():
                    lines.append(f"Notes: {frame.text.strip()}")
            if not lines:
                continue
            for line in (f"--- Slide {number} of {len(slides)} ---", *lines, ""):
                if not out.add(line):
                    return out.text()
    except FormatError:
        raise
    except Exception:
        raise FormatError("pptx_corrupt") from None
    return out.text()


def _shape_texts(shapes: Any, depth: int) -> Iterator[str]:
    for shape in shapes:
        if depth < MAX_GROUP_DEPTH and hasattr(shape, "shapes"):  # a group of shapes
            yield from _shape_texts(shape.shapes, depth + 1)
        elif getattr(shape, "has_table", False):
            for row in shape.table.rows:
                cells = [" ".join(cell.text.split()) for cell in row.cells]
                if any(cells):
                    yield " | ".join(cells)
        elif getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            yield shape.text_frame.text.strip()


# HTML

_BLOCK_TAGS = frozenset(
    """address article aside blockquote br caption dd details div dl dt figcaption figure
    footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table title
    tr ul""".split()
)
_SKIPPED_TAGS = {"script", "style", "noscript", "template"}


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._preformatted = 0

    def _at_line_start(self) -> bool:
        return not self.parts or self.parts[-1].endswith("\n")

    def _break_line(self) -> None:
        if self._at_line_start():
            return
        self.parts[-1] = self.parts[-1].rstrip(" ")
        self.parts.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self._break_line()
        elif tag in ("td", "th") and not self._at_line_start():
            self.parts.append(" | ")
        if tag == "pre":
            self._preformatted += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._break_line()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self._break_line()
        if tag == "pre":
            self._preformatted = max(0, self._preformatted - 1)

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if not self._preformatted:
            data = re.sub(r"\s+", " ", data)
            if self._at_line_start():
                data = data.lstrip(" ")
        if data:
            self.parts.append(data)


def html_text(html: str) -> str:
    """The text of an HTML page: no scripts or styles, link text kept, blocks on lines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", text)

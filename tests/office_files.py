"""Real small Office files for tests, written with openpyxl and python-pptx, and ways to
tamper with them (swap or add a part of the zip) the way a hostile upload would."""

from __future__ import annotations

import io
import zipfile

import openpyxl
import pptx
from pptx.util import Inches


def make_xlsx() -> bytes:
    """Two sheets: a budget with a formula, and a short list of owners."""
    book = openpyxl.Workbook()
    budget = book.active
    budget.title = "Budget"
    budget.append(["team", "share", "note"])
    budget.append(["sales", 60, "grows in Q3"])
    budget.append(["support", 40.0, None])
    budget.append(["total", "=SUM(B2:B3)"])
    owners = book.create_sheet("Owners")
    owners.append(["sales", "Alice"])
    owners.append([])
    owners.append(["support", "Bob\tand\nCarol"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_pptx() -> bytes:
    """Two slides: a title with notes, and a body with a table and a group of shapes."""
    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[0])
    first.shapes.title.text = "Quarterly review"
    first.placeholders[1].text = "Launch moved to Monday"
    first.notes_slide.notes_text_frame.text = "Mention the budget freeze."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Numbers"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for (row, col), text in {
        (0, 0): "team",
        (0, 1): "share",
        (1, 0): "sales",
        (1, 1): "60",
    }.items():
        table.cell(row, col).text = text
    group = second.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(4), Inches(3), Inches(1))
    box.text_frame.text = "Grouped remark"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def rezip(data: bytes, replace: dict[str, bytes] | None = None, *, add: dict[str, bytes] | None
          = None) -> bytes:  # fmt: skip
    """`data` (a zip) with some parts replaced and others added."""
    replace, add = replace or {}, add or {}
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, replace.get(info.filename, source.read(info)))
        for name, body in add.items():
            target.writestr(name, body)
    return out.getvalue()


def part(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>\n"
)


def with_entities(xml: bytes, text_marker: bytes) -> bytes:
    """`xml` with a billion-laughs DTD before its root and `&lol9;` in place of a marker."""
    body = xml.split(b"?>", 1)[1] if xml.startswith(b"<?xml") else xml
    return LAUGHS + body.lstrip().replace(text_marker, b"&lol9;", 1)

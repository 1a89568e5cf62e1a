"""Excel, PowerPoint, CSV, Markdown, code and HTML read as text, from real files, and the
hostile ones (zip bombs, entity tricks, lying dimensions, macros, damage) refused or
bounded with one sentence, quickly."""

from __future__ import annotations

import re
import time

import pytest
from office_files import make_pptx, make_xlsx, part, rezip, with_entities

from bot.gather.file_formats import TRUNCATED
from bot.gather.files import FileRejected, extract_text

MB = 1024 * 1024
LIMIT = 5 * MB
SHEET = "xl/worksheets/sheet1.xml"
SLIDE = "ppt/slides/slide1.xml"


def read(name: str, data: bytes, mimetype: str | None = None, max_bytes: int = LIMIT) -> str:
    return extract_text(name, mimetype, data, max_bytes=max_bytes)


def rejection(name: str, data: bytes, max_bytes: int = LIMIT) -> str:
    with pytest.raises(FileRejected) as caught:
        read(name, data, max_bytes=max_bytes)
    assert not caught.value.image
    return caught.value.reason


def test_every_sheet_is_read_with_its_name_and_rows_as_tab_separated_lines():
    text = read("budget.xlsx", make_xlsx())
    assert text.startswith("## Sheet: Budget\nteam\tshare\tnote\nsales\t60\tgrows in Q3\n")
    assert "support\t40\n" in text  # 40.0 as people write it, trailing empty cells dropped
    assert "## Sheet: Owners\nsales\tAlice\nsupport\tBob and Carol" in text  # no empty rows


def test_formulas_are_never_evaluated_only_their_saved_values_read():
    book = make_xlsx()
    sheet = part(book, SHEET).decode()
    # As Excel saves it: the formula and the value it last computed.
    saved = re.sub(r'<c r="B4".*?</c>', '<c r="B4"><f>SUM(B2:B3)</f><v>100</v></c>', sheet)
    assert saved != sheet
    assert "total\t100" in read("budget.xlsx", rezip(book, {SHEET: saved.encode()}))
    # Written by a program that never computed it: no value, and the formula is not run.
    text = read("budget.xlsx", book)
    assert "SUM" not in text and "\ntotal\n" in text


def test_a_workbook_with_macros_is_read_and_its_macros_ignored():
    macro = b'Attribute VB_Name = "Module1"\nSub AutoOpen()\nShell "calc"\nEnd Sub\n'
    book = rezip(make_xlsx(), add={"xl/vbaProject.bin": macro})
    text = read("budget.xlsm", book)
    assert "sales\t60" in text and "Shell" not in text and "AutoOpen" not in text


def test_office_files_are_known_by_content_or_mimetype_whatever_their_name():
    book, deck = make_xlsx(), make_pptx()
    assert "sales\tAlice" in read("export", book)
    assert "sales\tAlice" in read("export.bin.download", book, "application/octet-stream")
    assert "Quarterly review" in read(
        "deck", deck, "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    )


def test_an_xlsx_zip_bomb_is_refused_before_it_is_opened():
    bomb = rezip(make_xlsx(), add={"xl/media/padding.bin": b"\0" * (3 * MB)})
    assert len(bomb) < 20_000
    reason = rejection("bomb.xlsx", bomb, max_bytes=20_000)
    assert reason == "bomb.xlsx unpacks to more than 1.9 MB, which is more than I can read."


def test_xml_entities_in_a_workbook_are_refused_not_expanded():
    book = make_xlsx()
    tricked = rezip(book, {SHEET: with_entities(part(book, SHEET), b"grows in Q3")})
    started = time.monotonic()
    reason = rejection("laughs.xlsx", tricked)
    assert time.monotonic() - started < 5
    assert reason.startswith("laughs.xlsx declares XML entities, which Office files never need")


def test_a_sheet_claiming_a_far_away_row_or_column_is_read_within_the_caps():
    book = make_xlsx()
    sheet = part(book, SHEET).decode()
    far = sheet.replace(
        "</sheetData>",
        '<row r="999999999"><c r="ZZZ999999999" t="inlineStr"><is><t>far</t></is></c></row>'
        "</sheetData>",
    ).replace('<dimension ref="A1:C4"/>', '<dimension ref="A1:ZZZ999999999"/>')
    started = time.monotonic()
    text = read("far.xlsx", rezip(book, {SHEET: far.encode()}))
    assert time.monotonic() - started < 30  # not a billion rows
    assert text.startswith("## Sheet: Budget\nteam\tshare")
    assert text.endswith("[… the rest of this workbook is not read: it has more cells than I read]")


def test_a_workbook_whose_text_is_over_the_cap_is_cut_short_and_says_so():
    import io

    import openpyxl

    book = openpyxl.Workbook()
    for n in range(3000):
        book.active.append(["same words again", n])
    out = io.BytesIO()
    book.save(out)
    text = read("long.xlsx", out.getvalue(), max_bytes=40_000)
    assert len(text) < 41_000 and "same words again\t0\n" in text
    assert text.endswith(TRUNCATED.format(limit="39.1 KB"))


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("broken.xlsx", make_xlsx()[:3000], "could not be opened as an Excel workbook"),
        ("broken.xlsx", b"PK\x03\x04 not a zip at all", "could not be opened as an Excel workbook"),
        ("broken.xlsx", rezip(make_xlsx(), {"xl/workbook.xml": b"<oops"}), "could not be opened"),
        ("broken.pptx", make_pptx()[:5000], "could not be opened as a PowerPoint file"),
        ("broken.pptx", rezip(make_pptx(), {SLIDE: b"<p:sld"}), "could not be opened"),
    ],
    ids=["xlsx-truncated", "xlsx-not-zip", "xlsx-bad-xml", "pptx-truncated", "pptx-bad-xml"],
)
def test_damaged_office_files_are_refused_in_one_sentence(name, data, expected):
    reason = rejection(name, data)
    assert reason.startswith(f"{name} {expected}") and reason.endswith("incomplete.")


def test_slides_text_tables_groups_and_notes_are_read_in_order():
    text = read("review.pptx", make_pptx())
    assert text == (
        "--- Slide 1 of 2 ---\nQuarterly review\nLaunch moved to Monday\n"
        "Notes: Mention the budget freeze.\n\n"
        "--- Slide 2 of 2 ---\nNumbers\nteam | share\nsales | 60\nGrouped remark"
    )


def test_a_pptx_zip_bomb_is_refused_before_it_is_opened():
    bomb = rezip(make_pptx(), add={"ppt/media/padding.bin": b"\0" * (8 * MB)})
    reason = rejection("bomb.pptx", bomb, max_bytes=60_000)
    assert reason == "bomb.pptx unpacks to more than 5.7 MB, which is more than I can read."


def test_xml_entities_in_a_presentation_are_never_expanded():
    deck = make_pptx()
    tricked = rezip(deck, {SLIDE: with_entities(part(deck, SLIDE), b"Quarterly review")})
    started = time.monotonic()
    try:
        text = read("laughs.pptx", tricked)
    except FileRejected as refused:  # refusing is as good as not expanding
        text = refused.reason
    assert time.monotonic() - started < 5
    assert "lollol" not in text


@pytest.mark.parametrize(
    "name, mimetype, data",
    [
        ("budget.csv", "text/csv", b"team,share\nsales,60\n"),
        ("budget.csv", "application/vnd.ms-excel", b"team,share\nsales,60\n"),  # Windows
        ("README.md", "text/markdown", b"# Notes\n\n- *one*\n"),
        ("tool.py", "text/x-python", b"def f():\n    return 1\n"),
        ("main.rs", None, b"fn main() {}\n"),
    ],
)
def test_csv_markdown_and_code_are_read_as_written(name, mimetype, data):
    assert read(name, data, mimetype) == data.decode().strip("\n")


def test_utf8_with_a_broken_byte_keeps_its_good_characters():
    data = "Café crème — naïve résumé\n".encode() * 4 + b"cut here \xe2\x80\n"
    text = read("notes.txt", data)
    assert text.startswith("Café crème — naïve résumé") and text.endswith("cut here \ufffd")


def test_html_link_text_is_kept():
    html = b'<p>See <a href="https://example.com/plan">the plan</a> for dates.</p>'
    assert read("page.html", html, "text/html") == "See the plan for dates."

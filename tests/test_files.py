"""Text extraction from uploaded files, on real files: PDFs and DOCX files are built here."""

from __future__ import annotations

import codecs
import io
import json
import os
import random
import zipfile

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from bot.gather.files import FileRejected, extract_text, human_size

MB = 1024 * 1024
LIMIT = 5 * MB


def read(name: str, data: bytes, mimetype: str | None = None, max_bytes: int = LIMIT) -> str:
    return extract_text(name, mimetype, data, max_bytes=max_bytes)


def rejection(name: str, data: bytes, mimetype: str | None = None, max_bytes: int = LIMIT) -> str:
    with pytest.raises(FileRejected) as caught:
        read(name, data, mimetype, max_bytes)
    reason = caught.value.reason
    assert str(caught.value) == reason
    assert reason.endswith(".") and reason.count(". ") == 0, reason  # one sentence
    return reason


# Builders for real documents


def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[str]) -> bytes:
    """A minimal, valid PDF with one line of Helvetica text per page ("" for a blank page)."""
    first_page = 4
    page_ids = [first_page + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page_id, text in zip(page_ids, pages, strict=True):
        content = f"BT /F1 14 Tf 72 720 Td ({_pdf_string(text)}) Tj ET".encode() if text else b""
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))

    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password, owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(build) -> bytes:
    document = docx.Document()
    build(document)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_the_pdf_builder_makes_a_pdf_pypdf_reads():
    reader = PdfReader(io.BytesIO(make_pdf(["Hello", ""])))
    assert len(reader.pages) == 2
    assert "Hello" in reader.pages[0].extract_text()


# Plain text and its kinds


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "README.md",
        "table.csv",
        "table.tsv",
        "config.yaml",
        "config.yml",
        "feed.xml",
        "server.log",
        "main.py",
        "app.ts",
        "lib.rs",
        "Main.java",
        "query.sql",
        "Makefile",
        "notes.unknownext",
    ],
)
def test_text_files_are_returned_as_they_are(name):
    text = "line one: a, b\tc\n  indented <tag> {braces}\nlast line"
    assert read(name, text.encode()) == text


def test_windows_line_endings_become_newlines():
    assert read("a.txt", b"one\r\ntwo\rthree\n") == "one\ntwo\nthree"


def test_utf8_with_bom():
    assert read("a.txt", "\ufeffcafé ☕".encode()) == "café ☕"


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF16_LE + "grüße, 世界".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "grüße, 世界".encode("utf-16-be"),
        codecs.BOM_UTF32_LE + "grüße, 世界".encode("utf-32-le"),
    ],
    ids=["utf-16-le", "utf-16-be", "utf-32-le"],
)
def test_utf16_and_utf32_with_bom(data):
    assert read("a.txt", data) == "grüße, 世界"


def test_legacy_single_byte_text_falls_back():
    data = "Café “quoted” — naïve".encode("cp1252")
    assert read("old.txt", data) == "Café “quoted” — naïve"
    assert read("old.txt", "Ærø".encode("latin-1")) == "Ærø"


def test_coloured_logs_keep_their_escape_codes():
    log = "\x1b[31mERROR\x1b[0m disk full\n" * 3
    assert read("build.log", log.encode()) == log.strip("\n")


def test_json_is_pretty_printed():
    text = read("data.json", b'{"name":"Ana","tags":["a","b"],"n":1.5,"ok":true}')
    assert json.loads(text) == {"name": "Ana", "tags": ["a", "b"], "n": 1.5, "ok": True}
    assert '\n  "name": "Ana",' in text


def test_json_by_mimetype_and_unicode_kept_readable():
    text = read("export", '{"city":"Zürich"}'.encode(), "application/json; charset=utf-8")
    assert text == '{\n  "city": "Zürich"\n}'


@pytest.mark.parametrize(
    "raw",
    [
        '{"a": 1, "a": 2}',  # duplicate keys would lose a value if re-serialised
        '{"a": 1,',  # not valid JSON: still worth reading
        '{"a": 1}\n{"a": 2}',  # JSON Lines
        "[" * 100_000 + "]" * 100_000,  # nested deeper than the parser can go
    ],
)
def test_json_that_cannot_be_reformatted_safely_is_kept_as_written(raw):
    assert read("data.json", raw.encode()) == raw


def test_html_keeps_text_and_drops_tags_scripts_and_styles():
    html = """<!doctype html><html><head><title>Report</title>
    <style>p { color: red }</style><script>var x = "<p>hidden</p>";</script></head>
    <body><h1>Q3   results</h1><p>Revenue &amp; costs rose&nbsp;5%.</p>
    <ul><li>First</li><li>Second</li></ul>
    <table><tr><th>Name</th><th>Value</th></tr><tr><td>a</td><td>1</td></tr></table>
    <pre>  keep
    spacing</pre><br/>end</body></html>"""
    text = read("page.html", html.encode())
    assert "<" not in text and "color" not in text and "hidden" not in text
    lines = text.splitlines()
    for line in ["Report", "Q3 results", "Revenue & costs rose 5%.", "First", "Second"]:
        assert line in lines
    assert "Name | Value" in lines and "a | 1" in lines
    assert "  keep\n    spacing" in text
    assert lines[-1] == "end"
    assert "" not in lines


def test_html_recognised_by_mimetype():
    assert read("download", b"<p>Hi <b>there</b></p>", "text/html") == "Hi there"


# PDF


def test_pdf_text_comes_page_by_page():
    text = read("report.pdf", make_pdf(["Quarterly revenue grew (a lot)", "", "Costs fell"]))
    assert text == (
        "--- Page 1 of 3 ---\nQuarterly revenue grew (a lot)\n\n--- Page 3 of 3 ---\nCosts fell"
    )


def test_pdf_recognised_by_content_whatever_its_name_or_mimetype():
    data = make_pdf(["Hidden in a text file"])
    assert "Hidden in a text file" in read("scan.txt", data, "text/plain")
    assert "Hidden in a text file" in read("noextension", data)


def test_text_that_mentions_the_pdf_header_is_still_text():
    text = "# Notes\nEvery PDF starts with %PDF-1.7 on its first line."
    assert read("notes.md", text.encode()) == text


def test_pdf_with_an_empty_open_password_is_read():
    data = encrypt_pdf(make_pdf(["Printing restricted"]), user_password="")
    assert "Printing restricted" in read("restricted.pdf", data)


def test_pdf_without_text_is_rejected_as_probably_scanned():
    reason = rejection("scan.pdf", make_pdf(["", ""]))
    assert reason.startswith("scan.pdf has no text I can extract")
    assert "scanned" in reason


def test_password_protected_pdf_is_rejected():
    reason = rejection("secret.pdf", encrypt_pdf(make_pdf(["Top secret"]), "hunter2"))
    assert reason == "secret.pdf is password-protected; remove the password and upload it again."


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4\nthis is not really a pdf at all",
        b"<html><body>Sign in to Slack</body></html>",
        make_pdf(["Cut short"])[:120],
    ],
    ids=["garbage", "html-instead", "truncated"],
)
def test_corrupt_pdf_is_rejected(data):
    reason = rejection("broken.pdf", data)
    assert reason == "broken.pdf could not be opened as a PDF; it may be damaged or incomplete."


# DOCX


def _report(document):
    document.add_heading("Findings", level=1)
    document.add_paragraph("The first finding.")
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).text = "Region"
    table.cell(0, 1).text = "Sales"
    table.cell(0, 2).text = "Notes"
    table.cell(1, 0).text = "North"
    table.cell(1, 1).text = "120"
    table.cell(1, 2).text = "best\nquarter"
    merged = document.add_table(rows=1, cols=2)
    merged.cell(0, 0).merge(merged.cell(0, 1)).text = "Merged once"
    document.add_paragraph("")
    document.add_paragraph("After the tables.")


def test_docx_paragraphs_and_table_cells_in_order():
    assert read("report.docx", make_docx(_report)) == (
        "Findings\n"
        "The first finding.\n"
        "Region | Sales | Notes\n"
        "North | 120 | best quarter\n"
        "Merged once\n"
        "After the tables."
    )


def test_docx_recognised_by_content_and_by_mimetype():
    data = make_docx(lambda d: d.add_paragraph("Inside"))
    assert read("attachment", data) == "Inside"
    mimetype = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert read("attachment.bin", data, mimetype) == "Inside"


def test_docx_without_text_is_rejected():
    reason = rejection("blank.docx", make_docx(lambda d: d.add_paragraph("   ")))
    assert reason == "blank.docx has no text in it for me to read."


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in entries.items():
            archive.writestr(name, body)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04 not a zip",
        b"plain words, not a zip",
        _zip({"hello.txt": b"a zip, but no Word document inside"}),
        make_docx(_report)[:2000],
    ],
    ids=["bad-zip", "not-zip", "zip-without-document", "truncated"],
)
def test_corrupt_docx_is_rejected(data):
    reason = rejection("broken.docx", data)
    assert (
        reason == "broken.docx could not be opened as a DOCX file; it may be damaged or incomplete."
    )


def test_docx_that_unpacks_to_far_more_than_its_size_is_rejected():
    bomb = _zip({"word/document.xml": b"\0" * (3 * MB)})
    reason = rejection("bomb.docx", bomb, max_bytes=20_000)
    assert reason == "bomb.docx unpacks to more than 1.9 MB, which is more than I can read."


# Rejections


def test_empty_file_is_rejected():
    assert rejection("empty.txt", b"") == "empty.txt is empty, so there is nothing for me to read."


def test_whitespace_only_file_is_rejected():
    assert rejection("blank.md", b" \n\t\r\n") == "blank.md has no text in it for me to read."


def test_file_over_the_limit_is_rejected_with_both_sizes():
    reason = rejection("big.log", b"x" * (3 * MB // 2), max_bytes=MB)
    assert reason == "big.log is 1.5 MB, which is over the 1 MB limit for files I read."


def test_file_just_over_the_limit_shows_exact_sizes():
    reason = rejection("big.log", b"x" * (MB + 1), max_bytes=MB)
    assert reason == (
        "big.log is 1,048,577 bytes, which is over the 1,048,576 bytes limit for files I read."
    )


def test_file_exactly_at_the_limit_is_read():
    assert read("edge.txt", b"y" * 100, max_bytes=100) == "y" * 100


@pytest.mark.parametrize(
    "name, data",
    [
        ("report.dat", b"\x00\x01\x02binary\x00data"),
        ("notes.txt", b"text with a NUL\x00 in it"),
        ("noextension", random.Random(7).randbytes(4096)),
        ("archive", _zip({"a.txt": b"zipped text"})),
        ("notes.txt", b"\xff\xfe\x00\xd8"),  # UTF-16 BOM, then a lone surrogate
        ("controls.txt", b"\x01\x02\x03\x04\x05\x06 mostly control bytes \x07\x0e\x0f"),
    ],
    ids=["nul-bytes", "nul-in-txt", "random", "zip", "bad-utf16", "controls"],
)
def test_binary_content_is_rejected_whatever_the_name(name, data):
    reason = rejection(name, data)
    assert reason == (
        f"{name} looks like a binary file; I read text, PDF, Word, Excel and PowerPoint files."
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("photo.PNG", "photo.PNG is an image, and I cannot read text in images."),
        ("old.doc", "old.doc is an old-style Word (.doc) file; save it as DOCX or PDF"),
        ("budget.xls", "budget.xls is a spreadsheet format I don't read; save it as .xlsx or CSV"),
        ("deck.key", "deck.key is a presentation format I don't read; save it as .pptx or PDF"),
        ("song.mp3", "song.mp3 looks like an audio or video file; I read text, PDF, Word, Excel"),
        ("code.zip", "code.zip looks like an archive; I read text"),
        ("tool.exe", "tool.exe looks like a program or library; I read text"),
    ],
)
def test_known_unsupported_types_are_rejected_with_what_to_do(name, expected):
    assert rejection(name, os.urandom(64)).startswith(expected)


def test_a_nameless_file_is_called_this_file():
    assert rejection("", b"") == "This file is empty, so there is nothing for me to read."


@pytest.mark.parametrize(
    "size, expected",
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1 KB"),
        (1536, "1.5 KB"),
        (MB, "1 MB"),
        (int(1.5 * MB), "1.5 MB"),
        (10 * MB, "10 MB"),
        (MB - 1, "1 MB"),
        (3 * 1024**3, "3 GB"),
        (5 * 1024**5, "5120 TB"),
    ],
)
def test_human_size(size, expected):
    assert human_size(size) == expected


def test_human_size_refuses_negative_sizes():
    with pytest.raises(ValueError, match="cannot be negative"):
        human_size(-1)

"""Turning an uploaded file into plain text a model can read: text of any kind, PDF and DOCX.

Anything else is refused with `FileRejected`, whose `reason` is one sentence to show the user.
The type is judged by the bytes as well as by the name, since names and mimetypes lie.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zipfile
from html.parser import HTMLParser
from typing import Any

# User-facing reasons, kept together; {name} is the file's name.
_ONLY_TEXT = "I can only read text, PDF and DOCX files"
MESSAGES = {
    "empty": "{name} is empty, so there is nothing for me to read.",
    "too_large": "{name} is {size}, which is over the {limit} limit for files I read.",
    "binary": "{name} looks like a binary file, and " + _ONLY_TEXT + ".",
    "binary_kind": "{name} looks like {kind}, and " + _ONLY_TEXT + ".",
    "image": "{name} is an image, and I cannot read text in images; " + _ONLY_TEXT + ".",
    "old_word": "{name} is an old-style Word (.doc) file; save it as DOCX or PDF and upload that.",
    "spreadsheet": "{name} is a spreadsheet; export it as CSV and upload that instead.",
    "presentation": "{name} is a presentation; save it as PDF and upload that instead.",
    "no_text": "{name} has no text in it for me to read.",
    "pdf_no_text": (
        "{name} has no text I can extract; it may be a scanned document, "
        "and I cannot read text in images."
    ),
    "pdf_encrypted": "{name} is password-protected; remove the password and upload it again.",
    "pdf_corrupt": "{name} could not be opened as a PDF; it may be damaged or incomplete.",
    "docx_corrupt": "{name} could not be opened as a DOCX file; it may be damaged or incomplete.",
    "docx_too_big": "{name} unpacks to more than {limit}, which is more than I can read.",
}

_UNNAMED = "This file"

DOCX_MIMETYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

# Extensions refused on sight, with the message that says what to do instead.
_REFUSED_EXTENSIONS: dict[str, tuple[str, str]] = {}
for _exts, _message, _kind in (
    ("png jpg jpeg gif bmp webp tif tiff heic heif ico psd", "image", ""),
    ("doc", "old_word", ""),
    ("xls xlsx xlsm ods numbers", "spreadsheet", ""),
    ("ppt pptx odp key", "presentation", ""),
    ("mp3 wav m4a aac ogg flac mp4 mov avi mkv webm", "binary_kind", "an audio or video file"),
    ("zip gz tgz tar bz2 xz 7z rar", "binary_kind", "an archive"),
    ("exe dll so dylib bin class jar pyc wasm o a", "binary_kind", "a program or library"),
    ("sqlite sqlite3 db", "binary_kind", "a database file"),
):
    for _ext in _exts.split():
        _REFUSED_EXTENSIONS[_ext] = (_message, _kind)

_JSON_EXTENSIONS = {"json", "geojson", "ipynb"}
_HTML_EXTENSIONS = {"html", "htm", "xhtml"}
_JSON_MIMETYPES = {"application/json"}
_HTML_MIMETYPES = {"text/html", "application/xhtml+xml"}

# A DOCX is a zip; refuse ones that would unpack to far more than their size (a zip bomb).
_MAX_UNPACK_RATIO = 100

# C0 and C1 control characters, less those real text contains (tab, newlines, form feed,
# backspace, and escape for coloured logs). Text is allowed a few, binary has many.
_CONTROL_CHARS = re.compile("[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAX_CONTROL_FRACTION = 0.01


# Refusals that mean "not a text file": skipped without a word, since a channel's images,
# recordings and spreadsheets are not problems to report.
NOT_TEXT_KINDS = frozenset(
    {"image", "binary", "binary_kind", "old_word", "spreadsheet", "presentation"}
)
_NOT_TEXT_MIME_PREFIXES = ("image/", "audio/", "video/")


class FileRejected(Exception):
    """A file we will not read; `reason` says why in one sentence a user can read, and
    `kind` names the case (a key of MESSAGES)."""

    def __init__(self, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    @property
    def not_text(self) -> bool:
        return self.kind in NOT_TEXT_KINDS


def is_not_text(name: str, mimetype: str | None) -> bool:
    """True when the name or mimetype alone says the file is not one we read (an image, a
    recording, an archive, a spreadsheet...), so it need not even be downloaded."""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    mime = (mimetype or "").split(";", 1)[0].strip().lower()
    return extension in _REFUSED_EXTENSIONS or mime.startswith(_NOT_TEXT_MIME_PREFIXES)


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


def extract_text(name: str, mimetype: str | None, data: bytes, *, max_bytes: int) -> str:
    """The readable text of an uploaded file, or FileRejected saying why there is none."""
    shown = name or _UNNAMED
    if not data:
        raise _rejected("empty", shown)
    if len(data) > max_bytes:
        size, limit = human_size(len(data)), human_size(max_bytes)
        if size == limit:
            size, limit = f"{len(data):,} bytes", f"{max_bytes:,} bytes"
        raise _rejected("too_large", shown, size=size, limit=limit)

    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    mime = (mimetype or "").split(";", 1)[0].strip().lower()

    if data.lstrip()[:5] == b"%PDF-" or extension == "pdf" or mime == "application/pdf":
        text = _pdf_text(shown, data)
    elif extension == "docx" or mime == DOCX_MIMETYPE or _is_docx_zip(data, extension):
        text = _docx_text(shown, data, max_bytes)
    elif extension in _REFUSED_EXTENSIONS:
        message, kind = _REFUSED_EXTENSIONS[extension]
        raise _rejected(message, shown, kind=kind)
    else:
        decoded = _decode(data)
        if decoded is None:
            raise _rejected("binary", shown)
        text = decoded.replace("\r\n", "\n").replace("\r", "\n")
        if extension in _JSON_EXTENSIONS or mime in _JSON_MIMETYPES:
            text = _pretty_json(text)
        elif extension in _HTML_EXTENSIONS or mime in _HTML_MIMETYPES:
            text = _html_text(text)

    text = text.strip("\n")
    if not text.strip():
        raise _rejected("no_text", shown)
    return text


def _rejected(message: str, name: str, **fields: str) -> FileRejected:
    return FileRejected(MESSAGES[message].format(name=name, **fields), message)


# Plain text


def _decode(data: bytes) -> str | None:
    """Decode text: UTF-8 (BOM or not), UTF-32/16 with a BOM, else Windows-1252/Latin-1 if
    the bytes look like text. None when they do not."""
    boms = (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same bytes
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    for bom, encoding in boms:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return None
            return text if _looks_like_text(text) else None
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Single-byte encodings decode anything, so only trust them on text-like bytes.
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text if _looks_like_text(text) else None


def _looks_like_text(text: str) -> bool:
    controls = len(_CONTROL_CHARS.findall(text))
    return controls <= len(text) * _MAX_CONTROL_FRACTION


def _pretty_json(text: str) -> str:
    """Indented JSON; the text unchanged if it is not one JSON document (JSON Lines, say)."""
    try:
        value = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python allows
        return text


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Re-serialising would silently keep only the last of repeated keys: keep the original.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate keys")
    return result


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


def _html_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", text)


# PDF


def _pdf_text(name: str, data: bytes) -> str:
    from pypdf import PdfReader  # imported here: only PDFs pay for it

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _decrypt_without_password(reader):
            raise _rejected("pdf_encrypted", name)
        pages = list(reader.pages)
        if not pages:  # every real PDF has a page; none means pypdf found no document
            raise _rejected("pdf_corrupt", name)
    except FileRejected:
        raise
    except Exception:
        raise _rejected("pdf_corrupt", name) from None

    sections = []
    for number, page in enumerate(pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception:  # one unreadable page should not cost the others
            continue
        if text.strip():
            sections.append(f"--- Page {number} of {len(pages)} ---\n{text.strip()}")
    if not sections:
        raise _rejected("pdf_no_text", name)
    return "\n\n".join(sections)


def _decrypt_without_password(reader: Any) -> bool:
    # Many PDFs are "encrypted" only to restrict printing, with an empty password to open.
    try:
        return bool(reader.decrypt(""))
    except Exception:
        return False


# DOCX


def _is_docx_zip(data: bytes, extension: str) -> bool:
    if not data.startswith(b"PK\x03\x04") or extension in _REFUSED_EXTENSIONS:
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _docx_text(name: str, data: bytes, max_bytes: int) -> str:
    import docx  # imported here: only DOCX files pay for it

    limit = max_bytes * _MAX_UNPACK_RATIO
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except Exception:
        raise _rejected("docx_corrupt", name) from None
    if unpacked > limit:
        raise _rejected("docx_too_big", name, limit=human_size(limit))
    try:
        document = docx.Document(io.BytesIO(data))
        return "\n".join(_docx_blocks(document))
    except Exception:
        raise _rejected("docx_corrupt", name) from None


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

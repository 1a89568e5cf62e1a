"""Turning an uploaded file into plain text a model can read: text of any kind (CSV,
Markdown, JSON, HTML, code...), PDF, Word (.docx), Excel (.xlsx) and PowerPoint (.pptx); the
Office and HTML readers live in bot.gather.file_formats.

Anything else is refused with `FileRejected`, whose `reason` is one sentence to show the user.
The type is judged by the bytes as well as by the name, since names and mimetypes lie.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from typing import Any

from bot.gather.file_formats import (
    FormatError,
    docx_text,
    html_text,
    human_size,
    office_kind,
    pptx_text,
    xlsx_text,
)

__all__ = ["FileRejected", "extract_text", "human_size", "refused_by_name"]

# User-facing reasons, kept together; {name} is the file's name.
_CAN_READ = "I read text, PDF, Word, Excel and PowerPoint files"
MESSAGES = {
    "empty": "{name} is empty, so there is nothing for me to read.",
    "too_large": "{name} is {size}, which is over the {limit} limit for files I read.",
    "binary": "{name} looks like a binary file; " + _CAN_READ + ".",
    "binary_kind": "{name} looks like {kind}; " + _CAN_READ + ".",
    "image": "{name} is an image, and I cannot read text in images.",
    "old_word": "{name} is an old-style Word (.doc) file; save it as DOCX or PDF and upload that.",
    "old_spreadsheet": (
        "{name} is a spreadsheet format I don't read; save it as .xlsx or CSV and upload that."
    ),
    "old_presentation": (
        "{name} is a presentation format I don't read; save it as .pptx or PDF and upload that."
    ),
    "no_text": "{name} has no text in it for me to read.",
    "pdf_no_text": (
        "{name} has no text I can extract; it may be a scanned document, "
        "and I cannot read text in images."
    ),
    "pdf_encrypted": "{name} is password-protected; remove the password and upload it again.",
    "pdf_corrupt": "{name} could not be opened as a PDF; it may be damaged or incomplete.",
    "docx_corrupt": "{name} could not be opened as a DOCX file; it may be damaged or incomplete.",
    "xlsx_corrupt": (
        "{name} could not be opened as an Excel workbook; it may be damaged or incomplete."
    ),
    "pptx_corrupt": (
        "{name} could not be opened as a PowerPoint file; it may be damaged or incomplete."
    ),
    "unpacks_too_big": "{name} unpacks to more than {limit}, which is more than I can read.",
    "xml_entities": (
        "{name} declares XML entities, which Office files never need, so I don't read it; "
        "save it again from Excel and upload that."
    ),
}

_UNNAMED = "This file"

DOCX_MIMETYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX_MIMETYPE = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

# Office files read, by extension and by mimetype.
_OFFICE_EXTENSIONS = {"docx": "docx", "pptx": "pptx", "pptm": "pptx", "ppsx": "pptx"}
_OFFICE_EXTENSIONS |= dict.fromkeys(("xlsx", "xlsm", "xltx", "xltm"), "xlsx")
_OFFICE_MIMETYPES = {DOCX_MIMETYPE: "docx", XLSX_MIMETYPE: "xlsx", PPTX_MIMETYPE: "pptx"}

# Extensions refused on sight, with the message that says what to do instead.
_REFUSED_EXTENSIONS: dict[str, tuple[str, str]] = {}
for _exts, _message, _kind in (
    ("png jpg jpeg gif bmp webp tif tiff heic heif ico psd", "image", ""),
    ("doc", "old_word", ""),
    ("xls ods numbers", "old_spreadsheet", ""),
    ("ppt odp key", "old_presentation", ""),
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

# C0 and C1 control characters, less those real text contains (tab, newlines, form feed,
# backspace, and escape for coloured logs). Text is allowed a few, binary has many.
_CONTROL_CHARS = re.compile("[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAX_CONTROL_FRACTION = 0.01


class FileRejected(Exception):
    """A file we will not read; `reason` says why in one sentence a user can read, and
    `kind` names the case (a key of MESSAGES)."""

    def __init__(self, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    @property
    def image(self) -> bool:
        """An image: skipped without a word, since a channel's pictures are no one's problem
        (every other refusal is told to the uploader, once)."""
        return self.kind == "image"


def refused_by_name(name: str, mimetype: str | None) -> FileRejected | None:
    """The refusal the name or mimetype alone calls for (an image, a recording, an archive,
    an old Office format...), so the file need not even be downloaded; None: look inside."""
    shown = name or _UNNAMED
    extension = _extension(name)
    mime = _mime(mimetype)
    if extension in _OFFICE_EXTENSIONS or mime in _OFFICE_MIMETYPES:
        return None
    if extension in _REFUSED_EXTENSIONS:
        message, kind = _REFUSED_EXTENSIONS[extension]
        return _rejected(message, shown, kind=kind)
    if mime.startswith("image/"):
        return _rejected("image", shown)
    if mime.startswith(("audio/", "video/")):
        return _rejected("binary_kind", shown, kind="an audio or video file")
    return None


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _mime(mimetype: str | None) -> str:
    return (mimetype or "").split(";", 1)[0].strip().lower()


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

    extension, mime = _extension(name), _mime(mimetype)
    office = _OFFICE_EXTENSIONS.get(extension) or _OFFICE_MIMETYPES.get(mime)
    if office is None and extension not in _REFUSED_EXTENSIONS:
        office = office_kind(data)  # names and mimetypes lie: an Office zip is read as one

    if data.lstrip()[:5] == b"%PDF-" or extension == "pdf" or mime == "application/pdf":
        text = _pdf_text(shown, data)
    elif office is not None:
        reader = {"docx": docx_text, "xlsx": xlsx_text, "pptx": pptx_text}[office]
        try:
            text = reader(data, max_bytes)
        except FormatError as exc:
            raise _rejected(exc.kind, shown, **exc.fields) from None
    elif (refusal := refused_by_name(name, mimetype)) is not None:
        raise refusal
    else:
        decoded = _decode(data)
        if decoded is None:
            raise _rejected("binary", shown)
        text = decoded.replace("\r\n", "\n").replace("\r", "\n")
        if extension in _JSON_EXTENSIONS or mime in _JSON_MIMETYPES:
            text = _pretty_json(text)
        elif extension in _HTML_EXTENSIONS or mime in _HTML_MIMETYPES:
            text = html_text(text)

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
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        good = sum(1 for ch in text if ord(ch) > 127) - bad
        # UTF-8 with a few broken bytes (a cut multi-byte character, a stray byte) keeps its
        # good characters; bytes that are mostly not UTF-8 are a single-byte encoding.
        if good <= bad:
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

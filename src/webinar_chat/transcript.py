"""Transcript export (docs/export.md): a webinar's every message, deleted ones included, as CSV or
JSON, written a page at a time as the store reads it (`Store.transcript_pages`), so that neither
the HTTP route nor `webinar-chat admin export` holds more than one page whatever the webinar's
size.

Everything here but `transcript_chunks` is pure: rows, cells and document pieces from values.
The JSON document is `{"webinar": …, "exported_at": …, "messages": [...]}`, written by hand
around orjson-encoded rows: its head first, then the rows page by page, then its end. Sections
added later go after `messages` as new keys; the keys here keep their meaning. The first is
`questions` (Q&A, every status, with its votes); in the CSV they are a second section after the
messages — an empty line, their own header line (QUESTION_COLUMNS), their rows — written only
when the webinar has questions, so a transcript without any reads exactly as before.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .protocol.events import iso_utc

if TYPE_CHECKING:
    from .protocol.events import Question
    from .store.store import Store, TranscriptEntry, Webinar

Format = Literal["csv", "json"]
FORMATS: tuple[Format, ...] = ("json", "csv")
MEDIA_TYPES: dict[Format, str] = {"json": "application/json", "csv": "text/csv; charset=utf-8"}

# The fields of every row, in the CSV's column order (the JSON rows have the same keys). Columns
# added later go at the end, so that a reader of the CSV by position keeps working.
COLUMNS = ("id", "seq", "created_at", "user_id", "display_name", "content", "hidden", "deleted",
           "deleted_at", "author_role", "visibility")

# The fields of a question row (responses.TranscriptQuestion), in the CSV's second section.
QUESTION_COLUMNS = ("id", "seq", "created_at", "user_id", "display_name", "content", "status",
                    "votes")

# What a spreadsheet takes for the start of a formula (or, tab and CR, for a cell separator it
# may then read one from): OWASP's list for CSV injection.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def filename(webinar_id: int, fmt: Format) -> str:
    return f"webinar-{webinar_id}-transcript.{fmt}"


def row(entry: TranscriptEntry) -> dict[str, Any]:
    """An entry as the JSON row (responses.TranscriptMessage): a deleted message has its id, the
    deletion's `seq` and `deleted_at`, and null for what the store no longer has."""
    return {
        "id": entry.id,
        "seq": entry.seq,
        "created_at": None if entry.created_at is None else iso_utc(entry.created_at),
        "user_id": entry.user_id,
        "display_name": entry.display_name,
        "content": entry.content,
        "hidden": entry.hidden,
        "deleted": entry.deleted,
        "deleted_at": None if entry.deleted_at is None else iso_utc(entry.deleted_at),
        "author_role": entry.author_role,
        "visibility": entry.visibility,
    }


def question_row(question: Question) -> dict[str, Any]:
    return {"id": question.id, "seq": question.seq, "created_at": iso_utc(question.created_at),
            "user_id": question.user_id, "display_name": question.display_name,
            "content": question.content, "status": question.status, "votes": question.votes}


def question_csv_text(rows: Iterable[dict[str, Any]], *, header: bool = False) -> str:
    """The questions' CSV lines; with `header`, after the empty line that ends the messages and
    the questions' header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        out.write("\r\n")
        writer.writerow(QUESTION_COLUMNS)
    writer.writerows([r["id"], r["seq"], r["created_at"], r["user_id"],
                      defuse_formula(r["display_name"]), defuse_formula(r["content"]),
                      r["status"], r["votes"]] for r in rows)
    return out.getvalue()


def defuse_formula(text: str | None) -> str | None:
    """`text` as a spreadsheet shows it rather than evaluates it: one that starts like a formula
    gets a leading single quote (the quote is visible in the cell; the text is otherwise kept)."""
    if text is not None and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


_BOOLEAN = {True: "true", False: "false"}


def csv_record(r: dict[str, Any]) -> list[Any]:
    """A JSON row as the CSV writer's record, in COLUMNS order: null is an empty cell (the csv
    module writes None so), booleans are true/false, and the cells people typed (display name,
    content) are defused. The others are ids, seqs, our own timestamps and our own words (role,
    visibility), which never start like a formula."""
    return [r["id"], r["seq"], r["created_at"], r["user_id"], defuse_formula(r["display_name"]),
            defuse_formula(r["content"]), _BOOLEAN.get(r["hidden"]), _BOOLEAN[r["deleted"]],
            r["deleted_at"], r["author_role"], r["visibility"]]


def csv_text(rows: Iterable[dict[str, Any]], *, header: bool = False) -> str:
    """CSV lines (RFC 4180: CRLF, fields with a comma, quote or line break quoted, quotes
    doubled) for `rows`, after the header line when `header`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(map(csv_record, rows))
    return out.getvalue()


def json_head(webinar: Webinar, exported_at: datetime) -> bytes:
    head = orjson.dumps({"webinar": {"id": webinar.id, "title": webinar.title,
                                     "agency_id": webinar.agency_id,
                                     "client_id": webinar.client_id},
                         "exported_at": iso_utc(exported_at)})
    return head[:-1] + b',"messages":['  # the object stays open for the rows


def json_rows(rows: list[dict[str, Any]], *, first: bool) -> bytes:
    """Rows of the `messages` array (a page in one orjson call: its list without the brackets),
    after a comma unless `first`."""
    body = orjson.dumps(rows)[1:-1]
    return body if first else b"," + body


JSON_QUESTIONS = b'],"questions":['  # between the two arrays
JSON_END = b"]}\n"


async def transcript_chunks(store: Store, webinar: Webinar, fmt: Format,
                            exported_at: datetime) -> AsyncIterator[bytes]:
    """The export of `webinar` in `fmt`, one chunk per page read. A failure half-way raises out
    of the iteration: the HTTP answer then ends without its last chunk and the CLI removes its
    file, so a cut transcript is never taken for a whole one."""
    if fmt == "csv":
        yield csv_text((), header=True).encode()
    else:
        yield json_head(webinar, exported_at)
    first = True
    async for page in store.transcript_pages(webinar.id):
        rows = [row(entry) for entry in page]
        yield csv_text(rows).encode() if fmt == "csv" else json_rows(rows, first=first)
        first = False
    if fmt == "json":
        yield JSON_QUESTIONS
    first = True
    async for questions in store.question_transcript_pages(webinar.id):
        rows = [question_row(question) for question in questions]
        yield (question_csv_text(rows, header=first).encode() if fmt == "csv"
               else json_rows(rows, first=first))
        first = False
    if fmt == "json":
        yield JSON_END

"""What text people may put into the chat: message content and display names (pure functions;
the schemas and handlers turn a problem into a 400).

Control characters are refused in both, on every database alike: PostgreSQL refuses NUL in a
text column (a 500 before this rule), SQLite stores it, and the other C0/C1 controls (escape
sequences, backspaces, bidi overrides in names) let one message or name disguise itself or mangle
a moderator's terminal. Newlines and tabs stay allowed in messages. A display name must also show
something: one made only of zero-width or other invisible characters would let a user post
without a visible name.
"""

from __future__ import annotations

import functools
import unicodedata

# Allowed in message content although they are control characters.
_CONTENT_CONTROLS_ALLOWED = frozenset("\n\t\r")
# Characters with these Unicode categories render as nothing: control (Cc), format (Cf: zero
# width space/joiners, bidi marks), surrogates (Cs), and separators that are not a plain space
# (Zl, Zp). Unassigned and private-use code points (Cn, Co) are not among them: they show as a
# box, and Cn changes with every Unicode version (the document's pattern would too). The format
# characters above U+FFFF (tags, hieroglyph and musical-symbol format controls) are refused
# outright in names: a JSON Schema pattern cannot name a character above U+FFFF in a way both
# ECMA-262 and Python read, and no name needs them.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


# --- the same rules as JSON Schema patterns (the OpenAPI document) ---------------------------------
# Built from the functions' own sets, so the document cannot drift from them; tests check that the
# patterns accept exactly what the functions accept, character by character. No `\s`: it means
# one set of characters to Python, another to ECMA-262 (the regex dialect of JSON Schema) and a
# third to the Rust engine pydantic validates `pattern` with; the classes list code points.

# What `str.strip()` removes (str.isspace; none above U+3000), as literal characters.
WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())


def _char_class(chars: list[int]) -> str:
    """A regex character class body for the code points `chars` (sorted), as ranges."""
    parts: list[str] = []
    start = previous = None
    for code in [*chars, -2]:
        if previous is not None and code == previous + 1:
            previous = code
            continue
        if start is not None and previous is not None:
            parts.append(_escape(start) if start == previous else
                         f"{_escape(start)}-{_escape(previous)}")
        start = previous = code
    return "".join(parts)


def _escape(code: int) -> str:
    """`\\uXXXX`: Python and ECMA-262 both read it (surrogates cannot be written into JSON as
    characters). Only the BMP: above it, Python writes `\\U…` and ECMA `\\u{…}`."""
    assert code <= 0xFFFF
    return f"\\u{code:04x}"


@functools.cache
def _categories() -> tuple[str, ...]:
    """The Unicode category of every code point of the BMP (built on the first request for the
    OpenAPI document, in a thread: app.py)."""
    return tuple(map(unicodedata.category, map(chr, range(0x10000))))


def _in_categories(categories: frozenset[str]) -> set[int]:
    """The code points up to U+FFFF in `categories` (what a pattern can name; see _INVISIBLE)."""
    return {code for code, category in enumerate(_categories()) if category in categories}


@functools.cache
def content_pattern() -> str:
    """Message content: no control character but newline, tab and CR; something besides space."""
    controls = _char_class(sorted(_in_categories(frozenset({"Cc"}))
                                  - {ord(c) for c in _CONTENT_CONTROLS_ALLOWED}))
    spaces = _char_class(sorted(map(ord, WHITESPACE)))
    return f"^[^{controls}]*[^{spaces}{controls}][^{controls}]*$"


@functools.cache
def display_name_pattern() -> str:
    """Display names: one line without control characters, with at least one visible character
    (and, beyond what the pattern says, no format character above U+FFFF)."""
    banned = _char_class(sorted(_in_categories(frozenset({"Cc", "Zl", "Zp"}))))
    # Without the surrogates (Cs): the Rust and ECMA-262 engines refuse them in a pattern, and
    # none can arrive (a JSON text with a lone surrogate is refused as malformed).
    invisible = _char_class(sorted(_in_categories(_INVISIBLE - {"Cs"}) | set(map(ord, WHITESPACE))))
    return f"^[^{banned}]*[^{invisible}][^{banned}]*$"


def content_problem(content: str) -> str | None:
    """Why `content` cannot be stored, or None."""
    for char in content:
        if unicodedata.category(char) == "Cc" and char not in _CONTENT_CONTROLS_ALLOWED:
            return "must not contain control characters (other than newline and tab)"
    return None


def clean_display_name(name: str) -> str:
    """The name as stored (trimmed, NFC); raises ValueError when it cannot be one."""
    name = unicodedata.normalize("NFC", name).strip()
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc":
            raise ValueError("must not contain control characters")
        if category in ("Zl", "Zp"):
            raise ValueError("must be one line")
        if category == "Cf" and char > "\uffff":
            raise ValueError("must not contain invisible formatting characters")
    visible = "".join(c for c in name if unicodedata.category(c) not in _INVISIBLE
                      and not c.isspace())
    if not visible:
        raise ValueError("must contain visible characters")
    return name


# A new account may not take the name of a host, moderator or platform admin (impersonation):
# 409 `display_name_reserved` (server/http_api.py, admin_api.py, the CLI's create-user).
RESERVED_DISPLAY_NAME = "This display name belongs to a host, moderator or admin; choose another"


def display_name_key(name: str) -> str:
    """The form in which two display names count as the same name: the cleaning of
    `clean_display_name` (NFC, trimmed — implied by the steps below), then NFKC (fullwidth,
    ligature, superscript and other compatibility forms become their plain letters), case-folded
    ("JANE" and "Jane"; "ß" and "ss"), without format characters (zero-width spaces and joiners,
    bidi marks: they show nothing, so "Jane Host" with a U+200B inside would otherwise be a new
    name), and with every run of whitespace as one space. Never raises: stored names from before
    the cleaning rules are compared too.

    Out of scope: confusables beyond NFKC — Cyrillic U+0430 for Latin "a", "rn" for "m", "0" for
    "O" (Unicode TS #39's skeletons would catch those, at the cost of refusing honest names)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    visible = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return " ".join(visible.split())

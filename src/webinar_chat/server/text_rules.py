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

import unicodedata

# Allowed in message content although they are control characters.
_CONTENT_CONTROLS_ALLOWED = frozenset("\n\t\r")
# Characters with these Unicode categories render as nothing: control (Cc), format (Cf: zero
# width space/joiners, bidi marks), unassigned/private/surrogates (Cn, Co, Cs), and separators
# that are not a plain space (Zl, Zp).
_INVISIBLE = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"})


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
    visible = "".join(c for c in name if unicodedata.category(c) not in _INVISIBLE
                      and not c.isspace())
    if not visible:
        raise ValueError("must contain visible characters")
    return name

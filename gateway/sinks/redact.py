"""Database URLs fit for logs and messages: the password never leaves this module."""

from __future__ import annotations

import re

# An SQLite URL of a plain path holds no password, and SQLAlchemy renders it unchanged: it is
# shown as it is, without importing SQLAlchemy (``status`` starts without it, issue 21).
_PLAIN_SQLITE_RE = re.compile(r"sqlite:///[A-Za-z0-9/._-]+", re.ASCII)


def redact(url: str) -> str:
    """Return a database URL without its password."""
    if _PLAIN_SQLITE_RE.fullmatch(url):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as the user wrote it, minus nothing secret
        return url.split("@")[-1]

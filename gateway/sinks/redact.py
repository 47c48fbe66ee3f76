"""Database URLs fit for logs and messages: the password never leaves this module."""

from __future__ import annotations


def redact(url: str) -> str:
    """Return a database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as the user wrote it, minus nothing secret
        return url.split("@")[-1]

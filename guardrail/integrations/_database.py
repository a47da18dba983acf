"""What a ``--db`` value names: a SQLite file, or a PostgreSQL server by a ``postgresql://`` URL; and how a URL is
shown without its password.

No database library is imported here: the command line names a database in its messages before anything connects.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "redacted", "scrubbed", "secrets_of", "unsupported_url_scheme"]

POSTGRES_SCHEMES = ("postgresql", "postgres")
"""The URL schemes libpq accepts, so both work wherever a SQLite file does."""

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HIDDEN = "***"
_PASSWORD_PARAMETER = re.compile(r"(^|&)password=[^&]*")


def is_postgres_url(db: str | Path) -> bool:
    """True for ``postgresql://...`` and ``postgres://...`` (any case); a ``Path`` is always a file."""
    return isinstance(db, str) and (match := _URL.match(db)) is not None and match.group(1).lower() in POSTGRES_SCHEMES


def unsupported_url_scheme(db: str | Path) -> str | None:
    """The scheme of a URL that is neither a file nor PostgreSQL (``mysql://...`` -> ``mysql``), else ``None``."""
    if not isinstance(db, str) or (match := _URL.match(db)) is None:
        return None
    scheme = match.group(1).lower()
    return None if scheme in POSTGRES_SCHEMES or len(scheme) == 1 else scheme  # "C://..." is a Windows path


def secrets_of(url: str) -> list[str]:
    """The password a URL carries (in its user part or as a ``password=`` parameter), as written and decoded."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return []
    userinfo, at, _hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    found.extend(value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "password")
    found.extend([q for q in (quote(s, safe="") for s in found) if q not in found])
    found.extend([u for u in (unquote(s) for s in found) if u not in found])
    return sorted({s for s in found if s}, key=len, reverse=True)


def redacted(db: str | Path) -> str:
    """``db`` as it may be printed: a URL's password (user part or ``password=`` parameter) replaced by ``***``.

    >>> redacted("postgresql://agent:s3cret@db.internal:5432/escalations?sslmode=require&password=s3cret")
    'postgresql://agent:***@db.internal:5432/escalations?sslmode=require&password=***'
    >>> redacted("agent.sqlite")
    'agent.sqlite'
    """
    text = str(db)
    if _URL.match(text) is None:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return f"{text.partition(':')[0]}://{_HIDDEN} (a malformed URL)"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{_HIDDEN}@{hosts}"
    query = _PASSWORD_PARAMETER.sub(rf"\1password={_HIDDEN}", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return text
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def scrubbed(message: object, url: str) -> str:
    """An error message on one line, with whatever password ``url`` carries hidden (a driver may echo parts of
    the URL it could not parse)."""
    text = " ".join(str(message).split())
    for secret in secrets_of(url):
        text = text.replace(secret, _HIDDEN)
    return text

"""Database URLs: the forms sitq reads, and how they are shown (never with a password).

SQLite's URL forms (`sqlite:///`, and the original sitq's `sqlite+aiosqlite:///`) are read
here, for `open_backend` and `SQLiteBackend` alike (which import this module rather than
sitq.backends, to keep the import graph free of cycles).

A PostgreSQL URL can carry a password in two places, `postgresql://user:PASSWORD@host/db`
and a `?password=PASSWORD` parameter, raw or percent-encoded. `redacted(url)` is the one
way a URL is shown (reprs, log lines, error messages, the CLI's output), and `scrubbed`
takes the password out of a message someone else built (a driver's error, say).

Redacting errs on the side of hiding: a password holding a raw "@" is cut at the *last*
"@", so an "@" further on (in a parameter) hides the host and database too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from sitq.errors import InvalidOptionError

#: URL schemes naming a SQLite file; sqlite+aiosqlite is the original sitq's (SQLAlchemy's).
SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")


def sqlite_path(text: str) -> str:
    """The file a sqlite:/// (or sqlite+aiosqlite:///) URL names; anything else as it is."""
    if not isinstance(text, str):  # bytes from os.fspath: SQLiteBackend refuses them
        return text
    scheme, found, rest = text.partition("://")
    if not found or scheme.lower() not in SQLITE_SCHEMES:
        return text
    if not rest.startswith("/") or rest == "/":
        raise InvalidOptionError(
            f"{redacted(text)!r}: write {scheme}:///relative/path.db or "
            f"{scheme}:////absolute/path.db (three slashes, then the path)"
        )
    return rest[1:]


HIDDEN = "***"
#: Characters a URL reserves: raw in a password, they make drivers misread the URL.
RESERVED_IN_PASSWORD = "/@?#"
_USER = re.compile(r"[^:@/?#]*")
_PORT = re.compile(r":\d*(?:[/?#]|$)")  # host:5432/db, not user:password@
_PARAMETER = re.compile(r"([?&;])([^=&#;]*)=([^&#;]*)")


def redacted(url: str) -> str:
    """`url` with every password replaced by ***; a plain path comes back as it is."""
    scheme, found, rest = url.partition("://")
    if not found:
        return url
    rest = _PARAMETER.sub(_hide_parameter, rest)
    password = _userinfo_password(rest)
    if password is not None:
        user = rest[: password[0] - 1]
        rest = f"{user}:{HIDDEN}{rest[password[1] :]}"
    return f"{scheme}://{rest}"


def scrubbed(text: str, url: str) -> str:
    """`text` with each password of `url` (as written and decoded) replaced by ***."""
    for secret in sorted(passwords(url), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def passwords(url: str) -> set[str]:
    """The passwords `url` carries, as written and percent-decoded (empty ones left out)."""
    rest = url.partition("://")[2]
    found = [value for _, key, value in _PARAMETER.findall(rest) if _is_secret(key)]
    rest = _PARAMETER.sub(_hide_parameter, rest)  # so an "@" in a parameter is not the host's
    password = _userinfo_password(rest)
    if password is not None:
        found.append(rest[password[0] : password[1]])
    return {form for value in found for form in (value, unquote_plus(value)) if form}


def require_encoded_password(url: str) -> None:
    """Refuse a userinfo password holding a raw "/", "@", "?" or "#": URL parsers (sitq's
    own `schema=` handling, the driver's) then read part of it as the host, port or query,
    and may show that part in their errors."""
    rest = _PARAMETER.sub(_hide_parameter, url.partition("://")[2])
    password = _userinfo_password(rest)
    if password is not None and any(
        c in rest[password[0] : password[1]] for c in RESERVED_IN_PASSWORD
    ):
        raise InvalidOptionError(
            f"the password in {redacted(url)} holds a raw '/', '@', '?' or '#', which a URL "
            "reserves: percent-encode it, e.g. urllib.parse.quote(password, safe='')"
        )


def _userinfo_password(rest: str) -> tuple[int, int] | None:
    """Where the password of `user:password@host...` is in `rest` (start, end), if any.
    With no "@" there is no userinfo (`host:5432`, `[::1]:5432`)."""
    user = _USER.match(rest)
    assert user is not None  # the pattern matches the empty string too
    colon, at = user.end(), rest.rfind("@")
    if at < colon or rest[colon : colon + 1] != ":" or _PORT.match(rest, colon):
        return None
    return (colon + 1, at)


def _is_secret(key: str) -> bool:
    return "password" in unquote_plus(key).lower()


def _hide_parameter(match: re.Match[str]) -> str:
    separator, key, value = match.groups()
    return f"{separator}{key}={HIDDEN if _is_secret(key) else value}"

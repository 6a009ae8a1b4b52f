"""Redaction of secrets in names, mappings, URLs and log records: the one place for it.

The rule for *names* (:func:`is_secret_name`)
---------------------------------------------
A name is normalised (lower case; ``-``, ``.``, spaces and ``__`` become ``_``) and is
secret when it contains one of :data:`SECRET_NAME_PARTS`::

    secret  password  passwd  passphrase  token  credential  session  private
    api_key  apikey  access_key  accesskey  signature  authorization  cookie

or is exactly ``pass`` or ``sig``, or ends in ``_pwd`` (``MYSQL_PWD``, ``db_pwd``) -- *unless*
its last part says it only names or locates a secret (:data:`NON_SECRET_SUFFIXES`:
``_file``, ``_path``, ``_dir``, ``_env``, ``_var``, ``_type``), e.g.
``aws_shared_credentials_file`` or ``password_env``.

So ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``X-Amz-Signature``,
``X-Amz-Credential``, ``db_password`` and ``AWS_ACCESS_KEY_ID`` are secret (an access
key id is not a secret by itself, but it names the account: we hide it too), while
``monkey``, ``keyboard``, ``s3_key``, ``key_prefix``, ``worker_memory`` and
``tokenizer_file`` are not. Neither ``key`` alone nor as a part is enough:
S3 object keys and dict keys are everywhere in this code base. Nor is ``pwd`` alone:
``PWD`` and ``OLDPWD`` are the shell's working directories, and hiding them turned every
path under the current directory into ``***`` in log lines. Otherwise the rule is broad
on purpose: a false positive only hides a harmless value.

Values are replaced by :data:`MASK` (``"***"``); empty values and ``None`` are kept as
they are, so "not set" stays visible.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "NON_SECRET_SUFFIXES",
    "SECRET_NAME_PARTS",
    "RedactingFilter",
    "is_secret_name",
    "redact_mapping",
    "redact_text",
    "redact_url",
    "redact_value",
    "register_secret",
    "registered_secrets",
    "secret_values_from_environ",
]

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values are not scrubbed from free text

SECRET_NAME_PARTS: tuple[str, ...] = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "credential",
    "session",
    "private",
    "api_key",
    "apikey",
    "access_key",
    "accesskey",
    "signature",
    "authorization",
    "cookie",
)
_SECRET_EXACT = frozenset({"pass", "sig"})
#: secret as the last part of a longer name only (``PWD`` alone is a working directory)
_SECRET_LAST_PARTS: tuple[str, ...] = ("_pwd",)
NON_SECRET_SUFFIXES: tuple[str, ...] = ("_file", "_path", "_dir", "_env", "_var", "_type")

_NORMALISE = re.compile(r"[\s.\-]+|_{2,}")
_SECRET_PART = re.compile("|".join(map(re.escape, SECRET_NAME_PARTS)))
# scheme://user:password@host  -> the password part (also inside free text)
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^/\s@]+)(?=@)")

# password=VALUE in libpq keyword/value strings ("host=h password=x dbname=d") and
# ODBC/JDBC-style ";Password=x;" connection strings
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd)\s*=\s*)(?P<pw>'[^']*'|[^\s;&'\"]+)", re.IGNORECASE
)

_REGISTRY: set[str] = set()
_REGISTRY_LOCK = threading.Lock()


def _normalise(name: str) -> str:
    return _NORMALISE.sub("_", str(name).strip().lower()).strip("_")


def is_secret_name(name: str) -> bool:
    """True when a value called ``name`` should not be shown (see the module doc)."""
    norm = _normalise(name)
    if not norm:
        return False
    if norm.endswith(NON_SECRET_SUFFIXES):
        return False
    return (
        norm in _SECRET_EXACT
        or norm.endswith(_SECRET_LAST_PARTS)
        or _SECRET_PART.search(norm) is not None
    )


def redact_url(url: str, *, mask: str = MASK) -> str:
    """``url`` with its password (``user:pw@`` -> ``user:***@``) and the values of
    secret-named query parameters (``X-Amz-Signature``, ``token``, ...) masked.

    Anything that is not a ``scheme://`` URL is returned unchanged.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. a port that is not a number: fall back to a regex
        return _URL_USERINFO.sub(lambda m: m["head"] + mask, url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{mask}@{hostport}"
    query = parts.query
    if query:
        pieces = []
        for piece in query.split("&"):
            name, eq, value = piece.partition("=")
            if eq and value and is_secret_name(unquote(name)):
                piece = f"{name}={mask}"
            pieces.append(piece)
        query = "&".join(pieces)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret: as given (urlunsplit would drop the // of scheme:///path)
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def redact_value(name: str, value: Any, *, mask: str = MASK) -> Any:
    """``value`` as it may be shown under ``name``: masked when the name is secret
    (unless empty/``None``), URLs cleaned, containers redacted recursively."""
    if is_secret_name(name):
        return value if value is None or value == "" else mask
    return _redact_any(value, mask)


def _redact_any(value: Any, mask: str) -> Any:
    if isinstance(value, Mapping):
        return redact_mapping(value, mask=mask)
    if isinstance(value, str):
        return redact_url(value, mask=mask)
    if isinstance(value, list | tuple):
        return type(value)(_redact_any(v, mask) for v in value)
    return value


def redact_mapping(mapping: Mapping[Any, Any], *, mask: str = MASK) -> dict[Any, Any]:
    """A redacted copy of ``mapping`` (recursively: nested mappings and lists too).

    A secret-named key hides its whole value, even a nested mapping; string values
    elsewhere go through :func:`redact_url`. The input is not modified.
    """
    return {key: redact_value(str(key), value, mask=mask) for key, value in mapping.items()}


def register_secret(value: str | None) -> None:
    """Add ``value`` to the process-wide set that every :class:`RedactingFilter` and
    :func:`redact_text` (with ``registered=True``) scrubs.

    Values shorter than :data:`MIN_SECRET_LENGTH` are ignored: scrubbing a one-letter
    password from every log line would mangle the logs and reveal it all the same.
    """
    if value is not None and len(str(value)) >= MIN_SECRET_LENGTH:
        with _REGISTRY_LOCK:
            _REGISTRY.add(str(value))


def registered_secrets() -> frozenset[str]:
    """The values given to :func:`register_secret` so far."""
    with _REGISTRY_LOCK:
        return frozenset(_REGISTRY)


def secret_values_from_environ(
    environ: Mapping[str, str] | None = None, *, min_length: int = MIN_SECRET_LENGTH
) -> frozenset[str]:
    """Values of environment variables whose names are secret (``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``DASK_GATEWAY__AUTH__KWARGS__PASSWORD``, ...).

    Values shorter than ``min_length`` are skipped: scrubbing ``"1"`` or ``"NO"`` from
    every log line would mangle it without protecting anything.
    """
    env = os.environ if environ is None else environ
    return frozenset(
        value for name, value in env.items() if len(value) >= min_length and is_secret_name(name)
    )


def redact_text(
    text: str, secrets: Iterable[str] = (), *, registered: bool = True, mask: str = MASK
) -> str:
    """``text`` with every occurrence of ``secrets`` (and, with ``registered``, the
    registered ones) replaced by ``mask``, and URL passwords masked."""
    values = set(secrets)
    if registered:
        values |= registered_secrets()
    return _scrub(text, _compile(frozenset(v for v in values if v)), mask)


_PATTERN_CACHE: dict[frozenset[str], re.Pattern[str] | None] = {}


def _compile(values: frozenset[str]) -> re.Pattern[str] | None:
    pattern = _PATTERN_CACHE.get(values)
    if pattern is None and values:
        # Longest first, so that a secret containing another one is masked whole.
        alternatives = sorted(values, key=len, reverse=True)
        pattern = re.compile("|".join(map(re.escape, alternatives)))
        if len(_PATTERN_CACHE) > 64:
            _PATTERN_CACHE.clear()
        _PATTERN_CACHE[values] = pattern
    return pattern


def _scrub(text: str, pattern: re.Pattern[str] | None, mask: str) -> str:
    if pattern is not None:
        text = pattern.sub(mask, text)
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: m["head"] + mask, text)
    if "=" in text:
        text = _KEYWORD_PASSWORD.sub(lambda m: m["head"] + mask, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secret values from records (never drops one).

    Scrubbed: the formatted message (``record.msg`` becomes the final text and
    ``record.args`` is cleared), the exception text and the stack info, replacing

    * the values given as ``secrets`` or later with :meth:`add_secret`,
    * values registered process-wide with :func:`register_secret`,
    * with ``from_environ`` (default), values of secret-named environment variables
      (see :func:`secret_values_from_environ`), read when the filter is created and
      again by :meth:`refresh_environ`,
    * passwords in ``scheme://user:password@host`` URLs.

    Attach it to a *handler* to cover records from every logger that reaches it::

        handler.addFilter(RedactingFilter())
    """

    def __init__(
        self,
        name: str = "",
        *,
        secrets: Iterable[str] = (),
        from_environ: bool = True,
        environ: Mapping[str, str] | None = None,
        min_length: int = MIN_SECRET_LENGTH,
        mask: str = MASK,
    ) -> None:
        super().__init__(name)
        self.mask = mask
        self.min_length = min_length
        self._from_environ = from_environ
        self._environ = environ
        self._own: set[str] = {s for s in secrets if s}
        self._env_values: frozenset[str] = frozenset()
        self.refresh_environ()

    def add_secret(self, value: str | None) -> None:
        """Scrub ``value`` from now on (empty values are ignored)."""
        if value:
            self._own.add(str(value))

    def refresh_environ(self) -> None:
        """Re-read secret-named environment variables (when ``from_environ``)."""
        if self._from_environ:
            self._env_values = secret_values_from_environ(self._environ, min_length=self.min_length)

    @property
    def secrets(self) -> frozenset[str]:
        """Every value this filter currently scrubs."""
        return frozenset(self._own) | self._env_values | registered_secrets()

    def redact(self, text: str) -> str:
        """``text`` scrubbed as a record's message would be."""
        return _scrub(text, _compile(self.secrets), self.mask)

    def filter(self, record: logging.LogRecord) -> bool:
        pattern = _compile(self.secrets)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        record.msg = _scrub(message, pattern, self.mask)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _scrub(record.exc_text, pattern, self.mask)
        if record.stack_info:
            record.stack_info = _scrub(record.stack_info, pattern, self.mask)
        return True

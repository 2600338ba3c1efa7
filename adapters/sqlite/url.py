"""Parsing of ``sqlite://`` URLs into a database path and broker options."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, unquote, urlsplit

from sergeant.errors import ConfigError

#: The longest ``busy_timeout``, in seconds: SQLite keeps it in milliseconds in a
#: 32-bit int, and a longer one wrapped to 0 (no waiting at all).
MAX_BUSY_TIMEOUT = 2_000_000


def parse_url(url: str) -> tuple[str, dict[str, float]]:
    """Split a ``sqlite://`` URL into a file path and broker options.

    ``sqlite:///relative/path.db`` names a path relative to the working
    directory, ``sqlite:////abs/path.db`` an absolute one (SQLAlchemy's rule: the
    path is what follows the third slash). Percent-escapes are decoded. The only
    query option is ``busy_timeout`` (seconds), e.g. ``?busy_timeout=10``.

    Raises:
        ConfigError: not a sqlite URL, a host was given, no path, or an unknown
            or malformed option.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError(f"not a sqlite URL: {url!r}")
    if parts.fragment or url.endswith("#"):
        # Dropped, it would open (and create) another file: "jobs#2.db" is "jobs".
        raise ConfigError(
            f"sqlite URLs take no '#' (percent-escape it as %23 in a path): {url!r}"
        )
    if parts.netloc:
        raise ConfigError(f"sqlite URLs take no host ({parts.netloc!r}): {url!r}")
    path = unquote(parts.path[1:])
    if not path or path == ":memory:":
        raise ConfigError(f"sqlite URL needs a file path (sqlite:///file.db): {url!r}")
    options: dict[str, float] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "busy_timeout":
            raise ConfigError(f"unknown sqlite URL option {name!r} in {url!r}")
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(f"busy_timeout must be a number: {url!r}") from None
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_BUSY_TIMEOUT):
            raise ConfigError(
                f"busy_timeout must be a number of seconds from 0 to "
                f"{MAX_BUSY_TIMEOUT:,}: {url!r}"
            )
        options[name] = seconds
    return path, options

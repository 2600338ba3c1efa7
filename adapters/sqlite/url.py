"""Parsing of ``sqlite://`` URLs into a database path and broker options."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, unquote, urlsplit

from sergeant.errors import ConfigError


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
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"busy_timeout must be a finite number >= 0: {url!r}")
        options[name] = seconds
    return path, options

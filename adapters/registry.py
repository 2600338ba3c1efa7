"""Brokers from URLs: a lazy table from URL scheme to a dotted factory path.

The convenience path for the command line and for configuration files (kombu's
transport table): ``broker_from_url("sqlite:///jobs.db")``. Code that composes
its own broker should call the adapter's constructor instead. The table holds
*strings*, imported only when a URL asks for them, so importing this module never
pulls in ``redis`` or ``pymongo``.

URLs carry passwords; every message this module produces goes through ``redact``,
and errors raised by an adapter have the URL's secrets scrubbed before they reach
the caller.
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import urlsplit

from sergeant.errors import ConfigError, SergeantError
from sergeant.protocols import Broker

__all__ = ["BROKERS", "broker_from_url", "redact"]

#: URL scheme -> "module:attribute" of a callable taking the URL, returning a broker.
BROKERS: dict[str, str] = {
    "memory": "sergeant.adapters.registry:memory_broker",
    "sqlite": "sergeant.adapters.sqlite:SqliteBroker.from_url",
    "redis": "sergeant.adapters.redis:RedisBroker.from_url",
    "rediss": "sergeant.adapters.redis:RedisBroker.from_url",
    "redis+cluster": "sergeant.adapters.redis:RedisBroker.from_cluster_url",
    "rediss+cluster": "sergeant.adapters.redis:RedisBroker.from_cluster_url",
    "mongodb": "sergeant.adapters.mongo:from_url",
    "mongodb+srv": "sergeant.adapters.mongo:from_url",
}

#: The optional dependency each scheme needs, for a helpful ImportError message.
_EXTRAS = {"redis": "redis", "rediss": "redis", "mongodb": "mongo"}
_EXTRAS["mongodb+srv"] = "mongo"
_EXTRAS["redis+cluster"] = _EXTRAS["rediss+cluster"] = "redis"

# user:password@ in any of several comma-separated URLs, and secret query values.
# The secret runs to the *last* "@" before the host, as URL parsers (and the
# drivers) read it: an unescaped "@" in a password is part of the password.
_USERINFO = re.compile(r"(?P<head>(?:^|[/,@])[^/,@:?#]*):(?P<secret>[^/,?#]*)@")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:password|passwd|pwd|secret|token)=)(?P<secret>[^&#]*)",
    re.IGNORECASE,
)


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``: safe to print or log.

    Handles ``scheme://user:secret@host``, comma-separated node lists and
    ``?password=`` style query options.
    """
    url = _USERINFO.sub(lambda m: f"{m['head']}:***@" if m["secret"] else m[0], url)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}***", url)


def _secrets(url: str) -> list[str]:
    found = [m["secret"] for m in _USERINFO.finditer(url)]
    found += [m["secret"] for m in _QUERY_SECRET.finditer(url)]
    return [secret for secret in found if secret]


def _scrub(text: str, url: str) -> str:
    """``text`` (an adapter's error message) without ``url``'s secrets."""
    text = text.replace(url, redact(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def memory_broker(url: str) -> Broker:
    """A new, empty in-process broker for ``memory://`` (its path is ignored)."""
    from .memory import MemoryBroker  # noqa: PLC0415 - lazy, like every entry

    return MemoryBroker()


def _resolve(dotted: str) -> Any:
    module_name, _, attribute = dotted.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def broker_from_url(url: str) -> Broker:
    """A broker for ``url``, chosen by its scheme (see ``BROKERS``).

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db``; ``redis://``,
    ``rediss://`` (comma-separated for several independent nodes);
    ``redis+cluster://``, ``rediss+cluster://`` (any node of a Redis Cluster);
    ``mongodb://``, ``mongodb+srv://``; ``memory://`` (this process only).

    Raises:
        ConfigError: no or unknown scheme, a malformed URL, or the adapter's
            optional dependency is not installed. The message names the scheme
            and shows the URL redacted.
        BrokerError: the adapter refused the URL; secrets are scrubbed from the
            message.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"a broker URL looks like scheme://..., got {redact(str(url))!r} "
            f"(schemes: {', '.join(sorted(BROKERS))})"
        )
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"malformed broker URL {redact(url)!r}: {error}") from None
    dotted = BROKERS.get(scheme)
    if dotted is None:
        raise ConfigError(
            f"unknown broker URL scheme {scheme!r} in {redact(url)!r} "
            f"(known: {', '.join(sorted(BROKERS))})"
        )
    try:
        factory = _resolve(dotted)
    except ImportError as error:
        extra = _EXTRAS.get(scheme)
        hint = f"; pip install 'sergeant[{extra}]'" if extra else ""
        raise ConfigError(
            f"the {scheme!r} broker cannot be loaded ({error}){hint}"
        ) from None
    try:
        broker: Broker = factory(url)
    except SergeantError as error:
        raise type(error)(_scrub(str(error), url)) from None
    except (ValueError, TypeError) as error:  # drivers' own URL parsing
        raise ConfigError(
            f"invalid {scheme} URL {redact(url)!r}: {_scrub(str(error), url)}"
        ) from None
    return broker

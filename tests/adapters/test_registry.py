"""Brokers from URLs: the lazy scheme table, its errors, and password redaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sergeant.adapters import registry
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.registry import broker_from_url, redact
from sergeant.adapters.sqlite import SqliteBroker

from sergeant.errors import BrokerError, ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host", "redis://:***@host"),
        ("redis://host:6379,host2:6380", "redis://host:6379,host2:6380"),
        (
            "redis://:pw1@a:1,redis://:pw2@b:2",
            "redis://:***@a:1,redis://:***@b:2",
        ),
        (
            "mongodb://u:p%40ss@h1,h2/db?replicaSet=rs",
            "mongodb://u:***@h1,h2/db?replicaSet=rs",
        ),
        (
            "mongodb://h/db?tls=true&password=x&w=1",
            "mongodb://h/db?tls=true&password=***&w=1",
        ),
        ("sqlite:////var/jobs.db", "sqlite:////var/jobs.db"),
        # An unescaped "@" in a password: drivers read up to the last one.
        ("redis://:p@ssw0rd@host:6379/0", "redis://:***@host:6379/0"),
        (
            "redis://u:p@1@a:1,redis://u:p@2@b:2",
            "redis://u:***@a:1,redis://u:***@b:2",
        ),
    ],
)
def test_redact_hides_every_password(url: str, expected: str) -> None:
    """Passwords in user info and in query options become ***; the rest stays."""
    redacted = redact(url)

    assert redacted == expected


def test_an_error_naming_a_url_with_an_at_in_its_password_shows_none_of_it() -> None:
    """The whole password is hidden, and only it: a first-"@" reading hid "p",
    printed "ssw0rd", and starred every "p" of the driver's message."""
    with pytest.raises(ConfigError) as caught:
        broker_from_url("ftp://user:p@ssw0rd@host/x")

    message = str(caught.value)
    assert "ssw0rd" not in message
    assert "ftp://user:***@host/x" in message


def test_sqlite_urls_build_a_sqlite_broker_on_that_path(tmp_path: Path) -> None:
    """sqlite:////abs/path.db opens that file."""
    path = tmp_path / "jobs.db"

    broker = broker_from_url(f"sqlite:///{path}")

    assert isinstance(broker, SqliteBroker)
    assert broker.path == str(path)
    broker.close()


def test_memory_urls_build_a_fresh_memory_broker() -> None:
    """memory:// gives a new, empty in-process broker each time."""
    first, second = broker_from_url("memory://"), broker_from_url("memory://")

    assert isinstance(first, MemoryBroker)
    assert first is not second


@pytest.mark.parametrize("url", ["ftp://user:pw@host/x", "jobs.db", ""])
def test_an_unknown_or_missing_scheme_is_a_config_error_without_the_password(
    url: str,
) -> None:
    """The error names the scheme and the known ones, never the password."""
    with pytest.raises(ConfigError) as caught:
        broker_from_url(url)

    message = str(caught.value)
    assert "pw" not in message
    assert "sqlite" in message
    if url.startswith("ftp"):
        assert "'ftp'" in message


def test_adapter_errors_have_the_urls_secrets_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An adapter that quotes the URL in its error does not leak the password."""

    def refuse(url: str) -> None:
        raise BrokerError(f"cannot use {url} (password hunter2)")

    monkeypatch.setattr(registry, "_refuse", refuse, raising=False)
    monkeypatch.setitem(registry.BROKERS, "fake", "sergeant.adapters.registry:_refuse")

    with pytest.raises(BrokerError) as caught:
        broker_from_url("fake://admin:hunter2@host")

    assert "hunter2" not in str(caught.value)
    assert "fake://admin:***@host" in str(caught.value)


@pytest.mark.parametrize("scheme", sorted(registry.BROKERS))
def test_every_table_entry_resolves_to_a_callable(scheme: str) -> None:
    """The dotted paths in the table name real factories (imported here on purpose)."""
    factory = registry._resolve(registry.BROKERS[scheme])

    assert callable(factory)


def test_importing_the_registry_imports_no_backend_driver() -> None:
    """The table is strings: redis and pymongo load only when a URL asks for them."""
    code = (
        "import sys, sergeant.adapters.registry\n"
        "print(sorted(m for m in ('redis', 'pymongo', 'sqlite3', 'psutil')"
        " if m in sys.modules))"
    )

    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == "[]"

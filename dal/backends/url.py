"""Store URLs: one string picks and configures a backend.

``scheme://[user[:password]@]host:port[,host:port...][/path][?option=value&...]``
parses into a frozen :class:`StoreURL` whose repr never shows the password.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import parse_qsl, quote, unquote

from dal.exceptions import ConfigurationError

T = TypeVar("T")


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL. ``str()`` and ``repr()`` mask the password."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...] = ()
    path: str = ""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        return self.render(hide_password=True)

    def __repr__(self) -> str:
        return f"StoreURL({self.render(hide_password=True)!r})"

    def render(self, *, hide_password: bool = True) -> str:
        """Return the URL as text; the password is ``***`` unless asked for."""
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password is not None:
                auth += ":" + ("***" if hide_password else quote(self.password, safe=""))
            auth += "@"
        netloc = ",".join(host if port is None else f"{host}:{port}" for host, port in self.hosts)
        query = "&".join(f"{key}={quote(value, safe='/')}" for key, value in sorted(self.options.items()))
        return f"{self.scheme}://{auth}{netloc}{self.path}" + (f"?{query}" if query else "")

    def settings(self) -> str:
        """Return every setting, password included, as one canonical string (for keyed hashing)."""
        return self.render(hide_password=False)

    def option(self, name: str, convert: Callable[[str], T], default: T) -> T:
        """Return option ``name`` converted, or ``default``; a bad value raises ConfigurationError."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"option {name}={raw!r} in {self} is not valid: {exc}; "
                f"give a value of the right type, e.g. {name}={default!r}") from exc

    def check_options(self, known: tuple[str, ...]) -> None:
        """Raise ConfigurationError naming the known options if any other was given."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            allowed = ", ".join(known) if known else "none"
            raise ConfigurationError(
                f"unknown option(s) {', '.join(unknown)} for {self.scheme}:// in {self}; "
                f"known options: {allowed}")

    def require_hosts(self, default_port: int) -> tuple[tuple[str, int], ...]:
        """Return the hosts with ports filled in; raise ConfigurationError when there are none."""
        if not self.hosts:
            raise ConfigurationError(
                f"{self} names no server; write {self.scheme}://host:{default_port}[,host:port...]")
        return tuple((host, default_port if port is None else port) for host, port in self.hosts)


def parse_url(text: str) -> StoreURL:
    """Parse a store URL; raise ConfigurationError saying what is wrong with it."""
    if not isinstance(text, str) or "://" not in text:
        raise ConfigurationError(
            f"{_masked(text)!r} is not a store URL; write scheme://..., e.g. sqlite:///dal.sqlite3, "
            "memory://, etcd://127.0.0.1:2379 or memcached://127.0.0.1:11211")
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if not scheme.isidentifier():
        raise ConfigurationError(f"{_masked(text)!r} has an invalid scheme {scheme!r}")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = slash + path
    user: str | None = None
    password: str | None = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        name, colon, secret = auth.partition(":")
        user = unquote(name)
        password = unquote(secret) if colon else None
    hosts = tuple(_parse_host(part, text) for part in netloc.split(",") if part)
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigurationError(
            f"the options of {_masked(text)!r} are malformed; write ?name=value&name=value") from exc
    for key, value in pairs:
        if key in options:
            raise ConfigurationError(f"option {key!r} is given twice in {_masked(text)!r}")
        options[key] = value
    if "user" in options:
        user = options.pop("user")
    if "password" in options:
        password = options.pop("password")
    return StoreURL(scheme, hosts, unquote(path), user, password, MappingProxyType(options))


def _parse_host(part: str, text: str) -> tuple[str, int | None]:
    host, colon, port = part.rpartition(":") if not part.endswith("]") else (part, "", "")
    if not colon:
        return part, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"port {port!r} in {_masked(text)!r} is not a number from 1 to 65535; write host:port")
    return host, int(port)


def _masked(text: object) -> str:
    """Return ``text`` with any password replaced, for error messages."""
    if not isinstance(text, str) or "://" not in text:
        return str(text)
    scheme, rest = text.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        auth, host = netloc.rsplit("@", 1)
        if ":" in auth:
            auth = auth.split(":", 1)[0] + ":***"
        netloc = f"{auth}@{host}"
    masked = f"{scheme}://{netloc}{sep}{tail}"
    head, q, query = masked.partition("?")
    if q:
        pairs = ("password=***" if pair.startswith("password=") else pair for pair in query.split("&"))
        query = "&".join(pairs)
        masked = f"{head}?{query}"
    return masked

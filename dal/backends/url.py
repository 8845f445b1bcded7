"""Store URLs: one string picks and configures a backend.

``scheme://[user[:password]@]host:port[,host:port...][/path][?option=value&...]``
parses into a frozen :class:`StoreURL` whose repr never shows the password.

How a URL splits (RFC 3986): the host part runs from ``://`` to the first ``/`` or ``?``;
the credentials are what precedes its last ``@``. So a user name or password containing
``/``, ``?`` or ``@`` must be percent-encoded (``%2F``, ``%3F``, ``%40``; ``%`` itself as
``%25``, ``:`` in a user name as ``%3A``); ``#`` has no special meaning. In a URL that names
a host, ``@`` may appear only there: anywhere after it (a raw ``/`` or ``?`` in a password
put it there), the URL is refused, since the parser cannot tell which part is secret. In the
query (``?user=...&password=...`` and every option) a value is percent-decoded and nothing else:
``+`` is a plus, never a space; ``&`` (``%26``) and ``%`` (``%25``) must be encoded, and ``@`` (``%40``)
in a URL that names a host. Decoding is strict (see :func:`_decoded`): a stray ``%``, escapes that
spell no UTF-8 and a lone surrogate (a byte that is not UTF-8, from the environment) outside a path
are refused, so that two URLs never name one store.
A host is a name, an IPv4 address or an IPv6 address in brackets (``[::1]:2379``); ``hosts`` holds
the address without them, which is what the clients connect to.

Every error message shows the URL as parsed, password masked, never the text as written:
there is no second parser to disagree with this one. Option values that are not plain
(letters, digits, ``_ . , : / + - ~`` and spaces) are masked too, since a value such as
``5;password=...`` is what a mistyped separator leaves.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import quote, unquote

from dal.exceptions import ConfigurationError

T = TypeVar("T")
_PLAIN = re.compile(r"[\w.,:/+~ -]*")
_HIDDEN = "***"
_ENCODE = ("percent-encode '/', '?' and '@' in a user name or password (%2F, %3F, %40) "
           "and '@' anywhere else (%40)")


def _shown(text: str) -> str:
    """Return ``text`` for an error message or a repr, or ``***`` when it could hold a secret."""
    return text if _PLAIN.fullmatch(text) else _HIDDEN


def _path_text(path: str, after_host: bool) -> str:
    """Return a path as written in a URL: ``%`` and ``?`` escaped, and ``@`` after a host part (where
    the parser refuses it), so it reads back the same."""
    text = path.replace("%", "%25").replace("?", "%3F")
    return text.replace("@", "%40") if after_host else text


_STRAY = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _decoded(text: str, what: str, raw_bytes: bool = False) -> str:
    """Return ``text`` percent-decoded strictly; ConfigurationError naming ``what`` (never its text: it
    may be a password) for a ``%`` that starts no escape, escapes that spell no UTF-8, or, unless
    ``raw_bytes`` (a path: a file name that is not UTF-8 is held as os.fsdecode gives it), a lone
    surrogate (a byte that is not UTF-8 in an environment variable). unquote() would keep the first,
    turn the second into U+FFFD (so two URLs would name one store) and pass the third on; strict, it
    leaves the first as written and raises for the second."""
    if _STRAY.search(text):
        raise ConfigurationError(f"{what} holds a '%' that starts no percent-escape; write a '%' as %25")
    if not raw_bytes and _SURROGATE.search(text):
        raise ConfigurationError(
            f"{what} holds a byte that is not UTF-8 (read from the environment as a lone surrogate); "
            "write it as UTF-8 text, percent-encoded if need be (%C3%A9 for 'é')")
    try:
        return unquote(text, errors="strict")  # runs of escapes decode as UTF-8 bytes; the rest as written
    except UnicodeDecodeError:
        raw = ", and a file name that is not UTF-8 as it is, never as escapes" if raw_bytes else ""
        raise ConfigurationError(
            f"{what} holds percent-escapes that are not UTF-8 (each character is its UTF-8 bytes, "
            f"%C3%A9 for 'é'); write a '%' as %25{raw}") from None


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
        """Return the URL as text; the password (and any option value that is not plain) is
        ``***`` unless asked for. The full form reads back as this same URL."""
        auth = ""
        if self.user is not None or self.password is not None:  # a password alone (Redis's AUTH) too
            auth = "" if self.user is None else quote(self.user, safe="")
            if self.password is not None:
                auth += ":" + (_HIDDEN if hide_password else quote(self.password, safe=""))
            auth += "@"
        netloc = ",".join(host_text(host) + ("" if port is None else f":{port}") for host, port in self.hosts)
        pairs = []
        for key, value in sorted(self.options.items()):
            shown = _shown(value) if hide_password else value
            pairs.append(f"{quote(key, safe='')}={shown if shown == _HIDDEN else quote(value, safe='/')}")
        query = "&".join(pairs)
        path = _path_text(self.path, after_host=bool(auth or netloc))
        return f"{self.scheme}://{auth}{netloc}{path}" + (f"?{query}" if query else "")

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
            shown = _shown(raw)
            # a converter's message may quote the value: only a plain one may be shown
            reason = str(exc) if shown == raw else "(value not shown: it may hold a secret)" + (
                "; options are separated by '&', not ';'" if ";" in raw else "")
            raise ConfigurationError(
                f"option {name}={shown!r} in {self} is not valid: {reason}; "
                f"give a value of the right type, e.g. {name}={default!r}") from exc

    def check_options(self, known: tuple[str, ...]) -> None:
        """Raise ConfigurationError naming the known options if any other was given."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            allowed = ", ".join(known) if known else "none"
            # an unknown option's value is never shown: a misspelled password (Password=, passwd=) is one
            masked = replace(self, options=MappingProxyType(
                {key: _HIDDEN if key in unknown else value for key, value in self.options.items()}))
            raise ConfigurationError(
                f"unknown option(s) {', '.join(_shown(name) for name in unknown)} for {self.scheme}:// "
                f"in {masked}; known options: {allowed}")

    def require_hosts(self, default_port: int) -> tuple[tuple[str, int], ...]:
        """Return the hosts with ports filled in; raise ConfigurationError when there are none or a host
        name is one the socket layer cannot look up (:func:`check_host_name`)."""
        if not self.hosts:
            raise ConfigurationError(
                f"{self} names no server; write {self.scheme}://host:{default_port}[,host:port...]")
        for host, _ in self.hosts:
            check_host_name(host, str(self))
        return tuple((host, default_port if port is None else port) for host, port in self.hosts)


#: the longest timeout a store takes, in seconds (about 31 years): a socket timeout overflows a little
#: above it (1e10 s is out of range of a C time_t's timeval in CPython), and gRPC's deadlines fail at once
MAX_TIMEOUT = 1e9


def plain_float(text: str) -> float:
    """Return ``float(text)`` for a number written plainly: ASCII, no spaces, no ``_`` (``float()`` also
    takes ``'१'``, ``' 3'`` and ``'1_0'``, which no one means as an option's value)."""
    return float(_plain(text))


def plain_int(text: str) -> int:
    """Return ``int(text)`` for a number written plainly (see :func:`plain_float`)."""
    return int(_plain(text))


def _plain(text: str) -> str:
    if not text.isascii() or text.strip() != text or "_" in text:
        raise ValueError("write the number plainly in ASCII (digits, '.', 'e'), without spaces or '_'")
    return text


def timeout_option(url: StoreURL, default: float) -> float:
    """Return the ``timeout`` option in seconds: positive, finite and at most :data:`MAX_TIMEOUT`, else
    ConfigurationError: a bigger one would fail every request at once (an etcd deadline) or raise
    from the socket (Redis), and NaN compares false with everything."""
    seconds = url.option("timeout", plain_float, default)
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ConfigurationError(
            f"option timeout in {url} must be a positive number of seconds, at most {MAX_TIMEOUT:.0f}")
    return seconds


def on_off(text: str) -> bool:
    """Read an on/off option (`1`, `true`, `yes` or `0`, `false`, `no`), for `StoreURL.option`."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError("must be 1 or 0")


def parse_url(text: str) -> StoreURL:
    """Parse a store URL; raise ConfigurationError saying what is wrong with it (never the password)."""
    if not isinstance(text, str) or "://" not in text:
        # nothing parsed: show the text only when it cannot hold credentials
        shown = repr(text) if isinstance(text, str) and _PLAIN.fullmatch(text) else "the URL given"
        raise ConfigurationError(
            f"{shown} is not a store URL; write scheme://..., e.g. sqlite:///dal.sqlite3, "
            "memory://, etcd://127.0.0.1:2379 or memcached://127.0.0.1:11211")
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if not scheme.isidentifier():
        raise ConfigurationError(f"the scheme {_shown(scheme)!r} of a store URL is not valid; write e.g. "
                                 "sqlite://, memory://, etcd:// or memcached://")
    end = min((found for found in (rest.find("/"), rest.find("?")) if found >= 0), default=len(rest))
    authority, remainder = rest[:end], rest[end:]
    path, _, query = remainder.partition("?")
    userinfo, at, netloc = authority.rpartition("@")
    if authority and "@" in remainder:
        raise ConfigurationError(
            f"this {scheme}:// URL (not shown: it may hold a password) has an '@' after its host part; "
            f"{_ENCODE}, e.g. {scheme}://user:pa%2Fss@host:port")
    user: str | None = None
    password: str | None = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = _decoded(name, f"the user name of this {scheme}:// URL")
        password = _decoded(secret, f"the password of this {scheme}:// URL") if colon else None
        if colon and not user:  # ':password@' (Redis's requirepass) names no user, as StoreURL renders one
            user = None
    # what error messages show: the parts as parsed, password masked, options left out until parsed
    auth = "" if user is None and password is None else \
        quote(user or "", safe="") + ("" if password is None else f":{_HIDDEN}") + "@"
    where = f"{scheme}://{auth}{netloc}{path}"
    hosts = tuple(_parse_host(part, where) for part in netloc.split(",")) if netloc else ()
    options: dict[str, str] = {}
    # percent-decoding only, never parse_qsl's '+' for a space (a form's rule, not a URL's): a password
    # a+b is a+b in both credential forms, and no option's value needs a space written as '+'
    pairs = [field.partition("=") for field in query.split("&")] if query else []
    if any(not key or not equals for key, equals, _ in pairs):
        raise ConfigurationError(f"the options of {where!r} are malformed; write ?name=value&name=value")
    for written, _, value in pairs:
        key = _decoded(written, f"an option's name in {where!r}")
        value = _decoded(value, f"option {_shown(key)!r} in {where!r}")
        if key in options:
            raise ConfigurationError(f"option {_shown(key)!r} is given twice in {where!r}")
        options[key] = value
    twice = [part for part, given in (("user", bool(user)), ("password", password is not None))
             if given and part in options]
    if twice:  # the query's would win silently: which is meant?
        raise ConfigurationError(f"{where!r} gives the {' and the '.join(twice)} both before its host "
                                 "(user:password@) and as ?user=/?password=; give each one way only")
    if "user" in options:
        user = options.pop("user")
    if "password" in options:
        password = options.pop("password")
    path = _decoded(path, f"the path of {where!r}", raw_bytes=True)
    return StoreURL(scheme, hosts, path, user, password, MappingProxyType(options))


def _parse_host(part: str, where: str) -> tuple[str, int | None]:
    """Return one ``host[:port]`` of a URL's host part as (host, port), an IPv6 address without its
    brackets (what the clients connect to); ConfigurationError for anything the clients would only
    fail on later, or read as another host."""
    if part.startswith("["):
        address, closing, after = part[1:].partition("]")
        if not closing or not _is_ipv6(address) or (after and not after.startswith(":")):
            raise ConfigurationError(f"{part!r} in {where!r} is not a bracketed IPv6 address; write "
                                     "[address]:port, e.g. [::1]:2379 (the brackets hold the whole address)")
        host, colon, port = address, after[:1], after[1:]
    elif "]" in part or part.count(":") > 1:
        raise ConfigurationError(f"{part!r} in {where!r} is not host:port; an IPv6 address goes in brackets, "
                                 "e.g. [::1]:2379 for ::1 port 2379")
    else:
        host, colon, port = part.partition(":")
    if colon and (not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigurationError(
            f"port {port!r} in {where!r} is not a number from 1 to 65535; write host:port")
    if not host:
        before = f" before :{port}" if colon else ""
        raise ConfigurationError(f"{where!r} names no host{before}; write host:port, "
                                 f"e.g. 127.0.0.1:{port or 'port'} (a list of hosts has no empty entry)")
    return host, int(port) if colon else None


def check_host_name(host: str, where: str) -> None:
    """Raise ConfigurationError when ``host`` (of the URL ``where``) is no address and no name the
    socket layer can look up: Python's sockets encode a name with the IDNA codec, which refuses an
    empty label (``cache..example``) or one over 63 characters with a bare UnicodeError at the
    first connection, long after configure(). memory:// and fakeredis:// take names, not hosts."""
    if ":" in host:  # an IPv6 address (the parser checked it)
        return
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise ConfigurationError(
            f"host {host!r} in {where} is not a valid host name: each dot-separated label must be "
            "1 to 63 characters, none empty (a typo such as 'cache..example'); write e.g. cache.example"
        ) from exc


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def host_text(host: str) -> str:
    """Return a host as a URL (and gRPC) writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host

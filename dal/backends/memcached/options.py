"""The ``replicas`` option of a ``memcached://`` URL, and the servers a replicated cache names.

Both checked once, when the cache is opened. ``replicas`` is written in the digits 0-9 alone
(``int()`` would also take ``" 3"``, ``"1_0"`` or other scripts' digits such as ``"३"``), and a
refusal quotes the text as written. A server named twice is refused whatever the case of its
host name (``a:1`` and ``A:1`` are one server: host names are case-insensitive); two spellings
that resolve to one address are refused by :mod:`~dal.backends.memcached.addresses`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dal.backends.url import StoreURL
from dal.exceptions import ConfigurationError

__all__ = ["check_replicas", "refuse_duplicates", "replicas_option"]

_DIGITS = re.compile("[0-9]+")


def _digits(text: str) -> int:
    """Convert a whole number written in ASCII digits, for ``StoreURL.option``."""
    if not _DIGITS.fullmatch(text):
        raise ValueError("write a whole number in the digits 0-9")
    return int(text)


def replicas_option(url: StoreURL) -> int:
    """Return the ``replicas`` option (1 when not given): a whole number from 1 to the servers
    ``url`` names, else ConfigurationError quoting it as written."""
    written = url.options.get("replicas")
    if written is None:
        return 1
    replicas = url.option("replicas", _digits, 1)
    check_replicas(str(url), len(url.hosts), replicas, written)
    return replicas


def check_replicas(where: str, servers: int, replicas: object, written: str | None = None) -> None:
    """Raise ConfigurationError unless ``replicas`` is a whole number from 1 to ``servers``.

    ``written``: the option's text in the URL, quoted in the message (else ``replicas`` is).
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= servers:
        shown = repr(replicas) if written is None else repr(written)
        raise ConfigurationError(f"option replicas in {where} must be a whole number from 1 to the "
                                 f"{servers} servers it names, not {shown}")


def refuse_duplicates(where: str, servers: Sequence[tuple[str, int]]) -> None:
    """Raise ConfigurationError when ``servers`` names one ``host:port`` twice, in any case."""
    seen: dict[str, str] = {}
    for host, port in servers:
        spelling, name = f"{host}:{port}", f"{host.lower()}:{port}"
        if name in seen:
            twice = spelling if seen[name] == spelling else f"{seen[name]} and {spelling}"
            raise ConfigurationError(f"{where} names one memcached server twice ({twice}); each replica "
                                     "must be a server of its own, so name it once")
        seen[name] = spelling

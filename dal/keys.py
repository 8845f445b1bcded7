"""The key layout in both stores, and the typed encoding of values inside keys.

Durable store, under ``<namespace>/``::

    o/<hybrid>/<guid>                       the object's JSON document
    u/<hybrid>/<field>/<value>              unique key -> owner guid
    i/<hybrid>/<field>/<value>/<guid>       index entry (empty value)
    l/<target>/<tguid>/<source>/<relation>/<sguid>
                                            relation link: source.relation points at target
    r/<source>/<relation>/<tguid>           one-to-one key -> the one source guid pointing at
                                            the target through that relation
    x/<milliseconds>/<token>                a commit's journal record: the cache keys it
                                            invalidates (see dal/cache/journal.py)

Volatile store, under ``<namespace>/c/<store>/`` (``<store>`` a digest naming the durable
store, so two stores sharing one cache and namespace never see each other's entries):
``o/<hybrid>/<guid>`` (cached document), ``d/<hybrid>/<guid>/<dynamic>`` (cached dynamic
value), ``q/<hybrid>/<query digest>`` (a cached query result) and the version tokens it
depends on, ``v/<hybrid>/<field>/*`` (any change of the field) and
``v/<hybrid>/<field>/=<value digest>`` (a change to or from one value). Versions are
exact keys, never prefixes, so a change of ``something`` cannot touch ``something2``.

Every component ends with ``/`` before the next, so a prefix scan for ``something`` can
never match ``something2``. Values carry their type: ``1``, ``'1'``, ``True``, ``None`` and
``'None'`` encode differently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from dal.values import canonical

#: longer encoded values are replaced by a digest so keys stay short
MAX_VALUE_LENGTH = 200
#: value version keys remembered per namespace, and the longest string value remembered
VERSION_MEMO = 4096
VERSION_MEMO_TEXT = 256
#: the types whose values name their version key by (type, value) alone: equal values of one of
#: these exact types have one tagged text (0.0 and -0.0 included), and differ from other types'
_MEMO_TYPES = frozenset({str, int, float, bool, type(None)})
#: what ``quote(text, safe="")`` leaves as it is: the text is its own quoting when made only of these
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")


def encode_value(value: Any) -> str:
    """Return ``value`` as a key component that keeps its type and contains no ``/``."""
    text = tagged(value)
    if text[0] in "sj" and not _UNQUOTED.fullmatch(text, 1):
        text = text[0] + quote(text[1:], safe="")
    if len(text) > MAX_VALUE_LENGTH:
        text = "h" + hashlib.sha256(text.encode()).hexdigest()
    return text


def tagged(value: Any) -> str:
    """Return ``value`` as text that keeps its type: ``1``, ``1.0``, ``True`` and ``'1'`` all differ."""
    if value is None:
        return "n"
    if value is True or value is False:
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value + 0.0!r}"  # -0.0 == 0.0, so both must give one key
    if isinstance(value, str):
        return "s" + value
    return "j" + canonical(value)  # lists and dicts: typed at any depth, like every comparison


class Keys:
    """Build the keys of one namespace.

    ``store`` names the durable store in cache keys: a digest, or a function returning it, called
    once on the first cache key (naming an etcd cluster takes a round trip, which ``configure()``
    must not need).
    """

    def __init__(self, namespace: str, store: str | Callable[[], str] = "") -> None:
        self.namespace = namespace
        self.root = f"{namespace}/"
        self._objects = f"{namespace}/o/"
        self._store = store
        self._cache = "" if callable(store) else self._cache_root()
        self._journal = f"{namespace}/x/"
        #: (hybrid, field, type, value) -> value version key, for values of the ``_MEMO_TYPES``
        self._versions: dict[tuple[str, str, type, Any], str] = {}

    def _cache_root(self) -> str:
        store = self._store() if callable(self._store) else self._store
        self._cache = f"{self.namespace}/c/{store}/" if store else f"{self.namespace}/c/"
        return self._cache

    @property
    def cache_root(self) -> str:
        """Return the prefix of every volatile-store key of this namespace and durable store."""
        return self._cache or self._cache_root()

    def doc(self, hybrid: str, guid: str) -> str:
        return f"{self._objects}{hybrid}/{guid}"

    def docs(self, hybrid: str) -> str:
        """Return the prefix of every document of one hybrid."""
        return f"{self._objects}{hybrid}/"

    def unique(self, hybrid: str, field: str, value: Any) -> str:
        return f"{self.root}u/{hybrid}/{field}/{encode_value(value)}"

    def index(self, hybrid: str, field: str, value: Any, guid: str) -> str:
        return f"{self.index_prefix(hybrid, field, value)}{guid}"

    def index_prefix(self, hybrid: str, field: str, value: Any) -> str:
        return f"{self.root}i/{hybrid}/{field}/{encode_value(value)}/"

    def link(self, target: str, target_guid: str, source: str, relation: str, source_guid: str) -> str:
        return f"{self.links(target, target_guid, source, relation)}{source_guid}"

    def links(self, target: str, target_guid: str, source: str | None = None,
              relation: str | None = None) -> str:
        """Return the prefix of the links pointing at one object (of one source relation, if given)."""
        prefix = f"{self.root}l/{target}/{target_guid}/"
        if source is not None:
            prefix += f"{source}/{relation}/"
        return prefix

    def onetoone(self, source: str, relation: str, target_guid: str) -> str:
        """Return the key naming the ``source`` object whose one-to-one ``relation`` points at a target."""
        return f"{self.onetoones(source, relation)}{target_guid}"

    def onetoones(self, source: str, relation: str | None = None) -> str:
        """Return the prefix of one hybrid's one-to-one keys (``r/<source>/``), or of one relation's."""
        prefix = f"{self.root}r/{source}/"
        return prefix if relation is None else f"{prefix}{relation}/"

    def cache_incarnation(self) -> str:
        """Return the key beside (not under) :attr:`cache_root` that names the start of the cache server
        its entries were last known current for (``RedisCache.settle_restart``): outside the entries,
        so clearing, listing or pruning them never touches it."""
        return f"{self.cache_root[:-1]}#incarnation"

    def cached_doc(self, hybrid: str, guid: str) -> str:
        return f"{self._cache or self._cache_root()}o/{hybrid}/{guid}"

    def published_stats(self) -> str:
        """Return the prefix under which processes publish their counters."""
        return f"{self._cache or self._cache_root()}s/"

    def cached_dynamic(self, hybrid: str, guid: str, name: str) -> str:
        return f"{self._cache or self._cache_root()}d/{hybrid}/{guid}/{name}"

    def cached_result(self, hybrid: str, digest: str) -> str:
        """Return the key of one query's cached result (its guids and the versions it was built at)."""
        return f"{self._cache or self._cache_root()}q/{hybrid}/{digest}"

    def field_version(self, hybrid: str, field: str) -> str:
        """Return the key whose token changes whenever ``field`` changes on any object of ``hybrid``."""
        return f"{self._cache or self._cache_root()}v/{hybrid}/{field}/*"

    def value_version(self, hybrid: str, field: str, value: Any) -> str:
        """Return the key whose token changes when an object's ``field`` becomes or stops being ``value``."""
        kind = type(value)
        if kind not in _MEMO_TYPES or (kind is str and len(value) > VERSION_MEMO_TEXT):
            return self._value_version(hybrid, field, value)
        # every save and delete names the versions of its values, which repeat (an enum's few
        # values, a default): remembered, a repeat neither hashes nor formats again. The type is
        # part of the memo's key, since 1, 1.0 and True are equal in Python but not here
        memo_key = (hybrid, field, kind, value)
        found = self._versions.get(memo_key)
        if found is None:
            found = self._value_version(hybrid, field, value)
            if len(self._versions) >= VERSION_MEMO:
                self._versions.clear()  # no eviction order to keep: refilling costs what missing does
            self._versions[memo_key] = found
        return found

    def schema_version(self, hybrid: str) -> str:
        """Return the key whose token changes whenever ``hybrid``'s schema record is written (no
        field version can take this form: theirs end in ``/*`` or ``/=<digest>``)."""
        return f"{self._cache or self._cache_root()}v/{hybrid}/#schema"

    def object_version(self, hybrid: str, guid: str) -> str:
        """Return ``value_version(hybrid, "guid", guid)`` without remembering it: a guid never repeats."""
        return self._value_version(hybrid, "guid", guid)

    def _value_version(self, hybrid: str, field: str, value: Any) -> str:
        digest = hashlib.blake2b(tagged(value).encode(), digest_size=12).hexdigest()
        return f"{self._cache or self._cache_root()}v/{hybrid}/{field}/={digest}"

    def journal(self) -> str:
        """Return the prefix of every journal record (``x/``)."""
        return self._journal

    def journal_record(self, stamp: float, token: str) -> str:
        """Return the key of one commit's journal record: ``x/<milliseconds, 13 digits>/<token>``.

        The time leads, so a scan meets the oldest records first.
        """
        return f"{self._journal}{int(stamp * 1000):013d}/{token}"

    @staticmethod
    def journal_stamp(key: str) -> float:
        """Return the time (seconds) a journal record key was written at."""
        return int(key.rsplit("/", 2)[-2]) / 1000

    def index_fields(self, hybrid: str) -> str:
        """Return the prefix of every index entry of one hybrid (``i/<hybrid>/``)."""
        return f"{self.root}i/{hybrid}/"

    def unique_fields(self, hybrid: str) -> str:
        """Return the prefix of every unique key of one hybrid (``u/<hybrid>/``)."""
        return f"{self.root}u/{hybrid}/"

    def schema(self, hybrid: str) -> str:
        """Return the key of one hybrid's schema record (``m/schema/<hybrid>``)."""
        return f"{self.root}m/schema/{hybrid}"

    def schemas(self) -> str:
        return f"{self.root}m/schema/"

    def cache_queue(self) -> str:
        """Return the prefix of the queued dynamics (``m/cachequeue/<hybrid>/<guid>/<dynamic>``)."""
        return f"{self.root}m/cachequeue/"

    def migration_step(self, number: int) -> str:
        """Return the key recording that migration step ``number`` completed (zero-padded: scans sort)."""
        return f"{self.root}m/steps/{number:010d}"

    def migration_steps(self) -> str:
        return f"{self.root}m/steps/"

    def migration_cursor(self, number: int, hybrid: str) -> str:
        """Return the key holding the last document a running step rewrote in one hybrid."""
        return f"{self.migration_cursors(number)}{hybrid}"

    def migration_cursors(self, number: int | None = None) -> str:
        """Return the prefix of one step's cursors, or with no ``number`` of every step's."""
        every = f"{self.root}m/cursor/"
        return every if number is None else f"{every}{number:010d}/"


#: how the keys :func:`is_flight_lock` accepts end
FLIGHT_ENDINGS = ("/lock", "/refresh")


def is_flight_lock(key: str) -> bool:
    """Tell whether a cache key is a single-flight lock: a locked dynamic's
    (``<namespace>/c/<store>/d/<hybrid>/<guid>/<dynamic>/lock``) or an object refresh's
    (``<namespace>/c/<store>/o/<hybrid>/<guid>/refresh``). Counted in components, not read by
    its end alone: the value of a dynamic named ``lock`` ends in ``/lock`` too."""
    if key.endswith("/lock"):
        parts = key.split("/")
        return len(parts) == 8 and parts[1] == "c" and parts[3] == "d"
    if key.endswith("/refresh"):
        parts = key.split("/")
        return len(parts) == 7 and parts[1] == "c" and parts[3] == "o"
    return False

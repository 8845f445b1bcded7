"""The dump format: reading the documents of a namespace, writing them as a dump, parsing one back.

A dump is one JSON document holding every object's stored document (relations as
``<relation>_guid``), by logical hybrid name, then guid::

    {"format": "dal-dump", "version": 1, "namespace": "dal",
     "hybrids": {"backend": [{"guid": "...", "data": {...}}, ...], ...},
     "counts": {"backend": 2, ...},
     "steps": {"done": [{"number": 1, ...}], "midway": []}}

``steps`` are the migration steps the documents went through (:mod:`dal.tools.transfer.steps`);
a dump written before dumps carried them has none.

It is written while the documents are scanned, one batch at a time, so a dump never holds
the namespace in memory. It is not a snapshot: on a store that others write to meanwhile,
each document is as it was when its batch was read.

:func:`dal.tools.transfer.load.load` validates a dump against the declared model and writes it into a store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from dal.backends.base import Entry
from dal.backends.paging import scan_batches
from dal.config import Context
from dal.exceptions import BackendError, InvalidValueError
from dal.model.meta import HybridMeta
from dal.model.registry import AmbiguousNameError, hybrids
from dal.model.validation import valid_guid
from dal.objects.transaction import Document, decode
from dal.structures import GUID_RULE
from dal.tools.transfer.steps import Steps, parse_steps, read_steps, settled
from dal.values import encodable

FORMAT = "dal-dump"
VERSION = 1
#: documents or keys read per round trip
READ_BATCH = 500
#: problems listed in one error message
MAX_LISTED = 20


#: of some (hybrid, guid), those the source of a selection holds outside it
Elsewhere = Callable[[Iterable[tuple[str, str]]], set[tuple[str, str]]]


@dataclass
class Dump:
    """A dump in memory: ``(guid, data)`` pairs by logical hybrid name, as read, not yet validated."""

    namespace: str
    hybrids: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    #: the migration steps its documents went through (``None``: not known, a dump from before dumps
    #: carried them)
    steps: Steps | None = None
    #: for a selection of some hybrids (--only): which objects its source holds outside it
    elsewhere: Elsewhere | None = field(default=None, repr=False, compare=False)

    def counts(self) -> dict[str, int]:
        return {name: len(records) for name, records in sorted(self.hybrids.items())}

    @property
    def total(self) -> int:
        return sum(len(records) for records in self.hybrids.values())

    def select(self, metas: Sequence[HybridMeta] | None) -> Dump:
        """Return the part of this dump holding the given hybrids (all for ``None``)."""
        if metas is None:
            return self
        chosen = {meta.name for meta in metas}
        guids: dict[str, set[str]] = {}

        def elsewhere(wanted: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
            for name in {name for name, _ in wanted} - chosen - guids.keys():
                guids[name] = {guid for guid, _ in self.hybrids.get(name, [])}
            return {(name, guid) for name, guid in wanted if name not in chosen and guid in guids[name]}

        return Dump(self.namespace, {name: self.hybrids.get(name, []) for name in sorted(chosen)},
                    self.steps.select(chosen) if self.steps is not None else None, elsewhere)


def select_hybrids(names: Iterable[str] | None) -> list[HybridMeta] | None:
    """Return the hybrids named by class or logical name, sorted by logical name (``None``: all)."""
    if names is None:
        return None
    chosen: dict[str, HybridMeta] = {}
    for name in (part.strip() for part in names):
        if not name:
            continue
        try:
            meta = hybrids.get(name)._meta
        except AmbiguousNameError as exc:  # its message says what to do
            raise InvalidValueError(f"cannot select hybrid {name!r}: {exc.args[0]}") from None
        except LookupError as exc:
            raise InvalidValueError(
                f"cannot select hybrid {name!r}: {exc.args[0]}; name hybrids by class (Backend) or logical "
                "name (backend), or declare them with --hybrids") from None
        chosen[meta.name] = meta
    if not chosen:
        raise InvalidValueError("no hybrid selected; name at least one, e.g. --only Backend,BackendType")
    return [chosen[name] for name in sorted(chosen)]


# --- reading a namespace ---------------------------------------------------------------


Group = tuple[str, Iterator[tuple[str, Document]]]


def read_documents(context: Context, only: Sequence[HybridMeta] | None = None) -> Iterator[Group]:
    """Yield ``(hybrid, documents)`` by hybrid name, each group ``(guid, document)`` in guid order.

    Documents are read in batches. Without ``only``, every document of the namespace is
    read, undeclared hybrids included (a load then says what to do about them). Consume
    each group before asking for the next.
    """
    names = [meta.name for meta in only] if only is not None else stored_hybrids(context)
    for name in names:
        prefix = context.keys.docs(name)
        yield name, _guids(prefix, _scan(context, prefix))


def stored_hybrids(context: Context) -> list[str]:
    """Return the names of the hybrids the namespace holds documents of, in name order.

    Not in key order: a name's keys sort before a shorter name it starts with when the next
    character sorts before '/' ('ab-c/...' before 'ab/...'). One read per hybrid: each skips
    past the documents of the hybrid before.
    """
    prefix = f"{context.keys.root}o/"
    names: list[str] = []
    start: str | None = None
    while True:
        found = context.persistent.scan(prefix, start_after=start, limit=1)
        if not found:
            return sorted(names)
        key = found[0][0]
        name, slash, _ = key[len(prefix):].partition("/")
        if not slash or (names and name == names[-1]):  # not a document's key, or a guid past _LAST
            start = key
            continue
        names.append(name)
        start = f"{prefix}{name}/{_LAST}"


#: the last character: a hybrid's document keys sort before '<hybrid>/' followed by it (guids are ASCII)
_LAST = "\U0010ffff"


def _guids(prefix: str, group: Iterable[tuple[str, Entry]]) -> Iterator[tuple[str, Document]]:
    for key, entry in group:
        yield key[len(prefix):], _document(key, entry)


def read_store(context: Context, only: Sequence[HybridMeta] | None = None) -> Dump:
    """Read the documents of a namespace, and the migration steps they went through, into a :class:`Dump`
    (what a copy loads); refuse them if ``dal migrate`` ran a step meanwhile."""
    names = None if only is None else {meta.name for meta in only}
    steps = read_steps(context, names)
    groups = read_documents(context, only)
    found = Dump(context.namespace, {name: list(documents) for name, documents in groups},
                 settled(context, steps, names))
    if names is not None:
        found.elsewhere = lambda wanted: _stored_outside(context, names, wanted)
    return found


def _stored_outside(context: Context, names: set[str],
                    wanted: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    keys = {context.keys.doc(name, guid): (name, guid) for name, guid in wanted if name not in names}
    listed = list(keys)
    found: set[tuple[str, str]] = set()
    for start in range(0, len(listed), READ_BATCH):
        found.update(keys[key] for key in context.persistent.get_many(listed[start:start + READ_BATCH]))
    return found


def count_documents(context: Context, names: Iterable[str]) -> dict[str, int]:
    """Return the number of stored documents of each named hybrid."""
    return {name: sum(len(batch) for batch in scan_batches(context.persistent, context.keys.docs(name),
                                                           READ_BATCH))
            for name in names}


def _scan(context: Context, prefix: str) -> Iterator[tuple[str, Entry]]:
    for batch in scan_batches(context.persistent, prefix, READ_BATCH):
        yield from batch


def _document(key: str, entry: Entry) -> Document:
    try:
        return decode(entry.value)
    except ValueError as exc:
        raise BackendError(f"the stored document {key} is not a JSON object ({exc}); it was not written by "
                           "dal or the store is damaged: run `dal check`") from exc


# --- writing and reading dumps -----------------------------------------------------------


def dump(context: Context, out: IO[str], only: Sequence[HybridMeta] | None = None) -> dict[str, int]:
    """Write the namespace of ``context`` to ``out`` as a dump; return the objects per hybrid.

    A document stored under a key that names no guid (written by another client) raises
    BackendError: a load would refuse the whole dump for it. (A copy reads such keys, and its
    check before writing lists them all.)
    """
    names = None if only is None else {meta.name for meta in only}
    steps = read_steps(context, names)
    groups = read_documents(context, only)
    return write_dump(out, context.namespace,
                      ((name, _by_guid(context.keys.docs(name), documents)) for name, documents in groups),
                      lambda: settled(context, steps, names))


def _by_guid(prefix: str, documents: Iterable[tuple[str, Document]]) -> Iterator[tuple[str, Document]]:
    for guid, document in documents:
        if not valid_guid(guid):
            raise BackendError(f"a document is stored under {prefix}{guid}, whose part after {prefix} is "
                               "not a guid: it was not written by dal, and `dal load` could not read it "
                               "back; run `dal check`, then store it again as a new object or delete the key")
        yield guid, document


def write_dump(out: IO[str], namespace: str, groups: Iterable[tuple[str, Iterable[tuple[str, Document]]]],
               steps: Callable[[], Steps] | None = None) -> dict[str, int]:
    """Write groups of documents as a dump, one object per line; return the objects per hybrid.

    ``steps`` returns the migration steps they went through, once they are written.
    """
    counts: dict[str, int] = {}
    out.write(f'{{"format": "{FORMAT}", "version": {VERSION}, "namespace": {json.dumps(namespace)}, '
              '"hybrids": {')
    for number, (hybrid, documents) in enumerate(groups):
        out.write(f'{"," if number else ""}\n{json.dumps(hybrid)}: [')
        count = 0
        for guid, document in documents:
            data = _json(hybrid, guid, document)
            out.write(f'{"," if count else ""}\n{{"guid": {json.dumps(guid)}, "data": {data}}}')
            count += 1
        out.write("\n]")
        counts[hybrid] = count
    out.write(f'}},\n"counts": {json.dumps(counts, sort_keys=True)}')
    if steps is not None:
        out.write(f',\n"steps": {json.dumps(steps().to_json(), sort_keys=True)}')
    out.write("}\n")
    return counts


def _json(hybrid: str, guid: str, document: Document) -> str:
    try:
        text = json.dumps(document, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise BackendError(f"the stored document of {hybrid} {guid} holds a value JSON cannot hold ({exc}); "
                           "run `dal check`") from exc
    # escaped, a lone surrogate is ASCII, but no load takes it: only a text holding "\ud" can hold one
    if "\\ud" in text and not encodable(json.dumps(document, ensure_ascii=False)):
        where = sorted(name for name, value in document.items()
                       if not encodable(json.dumps({name: value}, ensure_ascii=False)))
        raise BackendError(f"the stored document of {hybrid} {guid} holds a lone surrogate, which UTF-8 "
                           f"cannot encode (in {', '.join(map(repr, where))}), and `dal load` refuses; run "
                           "`dal check`")
    return text


def read_dump(stream: IO[str], source: str = "the dump") -> Dump:
    """Parse a dump and check its shape (not yet the model: :func:`~dal.tools.transfer.load.load` does)."""
    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # json's own: the last one wins
        named = dict(pairs)
        if len(named) < len(pairs):
            twice = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
            raise InvalidValueError(f"{source} names {', '.join(map(repr, twice))} twice in one JSON object, "
                                    "and one would be lost; give each key once (for a hybrid named twice "
                                    "under \"hybrids\" by two dumps merged by hand: merge its lists)")
        return named
    try:
        raw = json.load(stream, object_pairs_hook=unique_keys)
    except InvalidValueError:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidValueError(f"{source} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                                "give a file written by `dal dump`") from None
    except UnicodeDecodeError as exc:
        raise InvalidValueError(f"{source} is not UTF-8 text ({exc}); give a file written by `dal dump`"
                                ) from None
    except ValueError as exc:  # valid JSON Python will not parse: an integer past its digit limit
        # the message's advice (sys.set_int_max_str_digits) is for programmers, not for this command
        raise InvalidValueError(f"{source} is not JSON dal can read (a number too long: "
                                f"{str(exc).split(';')[0]}); give a file written by `dal dump`") from None
    except RecursionError:
        raise InvalidValueError(f"{source} is not JSON dal can read (nested too deeply); give a file "
                                "written by `dal dump`") from None
    return parse_dump(raw, source)


def parse_dump(raw: Any, source: str = "the dump") -> Dump:
    """Check the shape of a parsed dump and return it; raise InvalidValueError listing what is wrong."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InvalidValueError(f'{source} is not a dal dump (it lacks "format": "{FORMAT}"); give a file '
                                "written by `dal dump`")
    version = raw.get("version")
    if type(version) is not int:  # true and 1.0 compare equal to 1, but no dal writes them
        given = f'"version": {json.dumps(version, default=repr)[:40]}' if "version" in raw else 'no "version"'
        raise InvalidValueError(f"{source} has {given}: a dump's version is a whole number, and this dal "
                                f"reads version {VERSION}; dump it again with `dal dump`")
    if version != VERSION:
        raise InvalidValueError(
            f"{source} is a version {version!r} dump, but this dal reads version {VERSION}; "
            + ("upgrade dal, or dump again with this one" if version > VERSION
               else "dump it again with `dal dump`"))
    problems: list[str] = []
    unknown = sorted(set(raw) - {"format", "version", "namespace", "hybrids", "counts", "steps"})
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, unknown))}")
    namespace = raw.get("namespace")
    if not isinstance(namespace, str):
        problems.append(f'"namespace" must be a string, not {namespace!r}')
    groups = raw.get("hybrids")
    dump = Dump(namespace if isinstance(namespace, str) else "",
                steps=parse_steps(raw["steps"], problems) if "steps" in raw else None)
    if not isinstance(groups, dict):
        problems.append('"hybrids" must be an object: {"hybrid name": [{"guid": ..., "data": {...}}, ...]}')
        groups = {}
    held: dict[str, int] = {}  # records per hybrid, those refused above included: they are not missing
    for name, records in groups.items():
        if not isinstance(records, list):
            problems.append(f"hybrids.{name} must be a list of objects, not {type(records).__name__}")
            continue
        dump.hybrids[name] = _records(name, records, problems)
        held[name] = len(records)
    _check_counts(raw.get("counts"), held, problems)
    if problems:
        raise InvalidValueError(listing(
            f"{source} is not a valid dal dump", problems,
            'write it with `dal dump`; its format is in the manual (docs/transfer.md)'))
    return dump


def _check_counts(counts: Any, held: dict[str, int], problems: list[str]) -> None:
    """Add a problem if ``counts`` (a dump's objects per hybrid) is malformed or differs from ``held``."""
    if counts is None:
        return
    if not isinstance(counts, dict) or not all(type(count) is int for count in counts.values()):
        # true and 1.0 would compare equal to 1: a count is a whole number, never a bool or a float
        problems.append(f'"counts" must map each hybrid to its number of objects (a whole number), not '
                        f'{_short(counts)}; dump again, or remove "counts"')
    elif counts != held:
        problems.append(f'"counts" says {counts!r}, but the file holds {dict(sorted(held.items()))!r}: it '
                        'was truncated or edited; dump again, or remove "counts" if the edit was deliberate')


def _records(name: str, records: list[Any], problems: list[str]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        where = f"hybrids.{name}[{position}]"
        if not isinstance(record, dict) or set(record) != {"guid", "data"}:
            problems.append(f'{where} must be {{"guid": "...", "data": {{...}}}}, not {_short(record)}')
            continue
        guid, data = record["guid"], record["data"]
        if not valid_guid(guid):
            problems.append(f"{where}: guid {guid!r} must be {GUID_RULE}")
        elif guid in seen:
            problems.append(f"{where}: guid {guid} appears twice in {name}")
        elif not isinstance(data, dict):
            problems.append(f"{where} ({guid}): data must be an object, not {_short(data)}")
        else:
            seen.add(guid)
            found.append((guid, data))
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def listing(headline: str, problems: list[str], advice: str) -> str:
    """Format an error listing ``problems`` (at most MAX_LISTED of them), saying nothing was written."""
    shown = "\n".join(f"  {problem}" for problem in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{headline} ({len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was written):\n" \
           f"{shown}{more}\n{advice}"

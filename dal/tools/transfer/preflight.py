"""What a load checks before it writes anything: the dump against the model, then against the store.

Every document is validated as a save would (:func:`~dal.model.validation.validate_document`),
a guid names one object across a class tree (:func:`shared_guids`), unique values and one-to-one
targets must be free within the dump and in the store, and every relation must point at an object in the
dump or stored. :mod:`dal.tools.transfer.load` then writes.
"""

from __future__ import annotations

from typing import Any

from dal.backends.base import Entry
from dal.config import Context
from dal.exceptions import (
    DalError,
    InvalidValueError,
    ObjectNotFoundError,
    OneToOneError,
    UniqueConstraintError,
)
from dal.keys import Keys
from dal.model.registry import family, hybrids
from dal.model.trees import class_trees, tree_root
from dal.model.validation import valid_guid, validate_document
from dal.objects.transaction import decode
from dal.structures import GUID_RULE, is_guid
from dal.tools.transfer.batches import Item
from dal.tools.transfer.dump import READ_BATCH, Dump, Elsewhere, listing


def validate_items(keys: Keys, dump: Dump, source: str, command: str = "load") -> list[Item]:
    """Check every document against the declared model; return them ordered by hybrid and guid.

    ``command`` (``copy``: a store's documents, no file) says where the refusal's remedy is applied.
    """
    problems: list[str] = []
    items: list[Item] = []
    for name in sorted(dump.hybrids):
        records = dump.hybrids[name]
        try:
            cls = hybrids.get(name)
        except LookupError:
            problems.append(f"hybrid {name!r} ({len(records)} objects) is not declared; pass the module "
                            "declaring it with --hybrids, or leave it out with --only")
            continue
        meta = cls._meta
        if meta.name != name:
            problems.append(f"hybrid {name!r} must be named by its logical name {meta.name!r}")
            continue
        for guid, data in sorted(records, key=lambda record: record[0]):
            if not is_guid(guid):  # parse_dump checked a file's; a copy reads them from the source's keys
                problems.append(f"{name} {guid!r}: the guid must be {GUID_RULE}")
                continue
            validation = validate_document(meta, data)
            problems += [f"{name} {guid}: {problem.message}" for problem in validation.problems]
            problems += [f"{name} {guid}: field {unknown!r} is not declared by {cls.__name__} (known: "
                         f"{', '.join(meta.fields())})" for unknown in validation.unknown]
            # written as validated, nested data the model does not declare would be lost
            problems += [f"{name} {guid}: {dropped.message}" for dropped in validation.dropped]
            items.append(Item(meta, guid, validation.document, keys.doc(name, guid)))
    if problems:
        fix = ("fix those documents in the source (`dal check` lists them), or copy with the model that "
               "wrote them (--hybrids), or leave their hybrids out (--only)" if command == "copy" else
               "fix those values in the file, or load it with the model that wrote it (--hybrids)")
        raise InvalidValueError(listing(f"{source} does not fit the declared model", problems, fix))
    return items


def unique_within(keys: Keys, items: list[Item], source: str) -> dict[str, tuple[Item, str, Any]]:
    """Refuse two objects of the dump holding one unique value; return ``{key: (holder, field, value)}``."""
    holders: dict[str, tuple[Item, str, Any]] = {}
    problems: list[str] = []
    for item in items:
        for prop in item.meta.unique:
            value = item.document.get(prop.name)
            if value is None:
                continue
            unique_key = keys.unique(item.meta.name, prop.name, value)
            other = holders.get(unique_key)
            if other is not None:
                problems.append(f"{item.meta.cls.__name__}.{prop.name} must be unique, but {other[0].guid} "
                                f"and {item.guid} both hold {value!r}")
            else:
                holders[unique_key] = (item, prop.name, value)
    if problems:
        raise UniqueConstraintError(listing(f"{source} holds duplicate unique values", problems,
                                             "give each object its own value"))
    return holders


def onetoone_within(keys: Keys, items: list[Item], source: str) -> dict[str, tuple[Item, str, Any]]:
    """Refuse two objects of the dump pointing at one target of a one-to-one relation.

    Return ``{one-to-one key: (holder, relation, target guid)}`` for every key the dump's objects take,
    the keys of the subclass hybrids holding the relation too included (none of them may hold it).
    """
    holders: dict[tuple[int, str], Item] = {}
    taken: dict[str, tuple[Item, str, Any]] = {}
    problems: list[str] = []
    for item in items:
        for relation in item.meta.relations.values():
            target = item.document[relation.guid_field]
            if not relation.onetoone or target is None or relation.target is None:
                continue
            members = family(relation)
            other = holders.setdefault((id(members[0]), target), item)
            if other is not item:
                problems.append(f"{relation.qualified} is one-to-one, but {other.label} and {item.label} "
                                f"both point at {relation.target.__name__} {target}")
                continue
            for member in members:
                assert member.owner is not None
                key = keys.onetoone(member.owner._meta.name, member.name, target)
                taken[key] = (item, relation.name, target)
    if problems:
        raise OneToOneError(listing(f"{source} holds several objects on one-to-one targets", problems,
                                     "point all but one of each elsewhere, or clear their relation"))
    return taken


def present(context: Context, keys: list[str]) -> dict[str, Entry]:
    """Return the entries of those of ``keys`` that are stored, read a batch at a time."""
    found: dict[str, Entry] = {}
    for start in range(0, len(keys), READ_BATCH):
        found.update(context.persistent.get_many(keys[start:start + READ_BATCH]))
    return found


def shared_guids(context: Context, items: list[Item], source: str, command: str = "load",
                 elsewhere: Elsewhere | None = None) -> None:
    """Refuse a guid two hybrids of one class tree (a hybrid and its subclass hybrids) would hold: two
    objects of the dump, or one of the dump and one stored under another hybrid of its tree (with
    ``replace`` too: that is another object, which a load never replaces).

    One guid names one object across a class tree: a reverse list spanning it tells its objects apart
    by guid alone, and would show one of the two twice and the other never. Checked before writing
    (not again in the commits); `dal check` reports a store holding such a pair (``duplicate_guid``).
    ``elsewhere`` (a selection of the source's hybrids) finds such a pair half of which --only leaves out.
    """
    tree = class_trees()
    held: dict[tuple[str, str], list[Item]] = {}  # (root, guid) -> the dump's objects of that tree
    for item in items:
        root = tree_root(item.meta.cls)
        if len(tree.get(root, ())) > 1:
            held.setdefault((root, item.guid), []).append(item)
    it = "the source" if command == "copy" else "the dump"
    problems = [f"{guid}: {' and '.join(item.meta.cls.__name__ for item in found)}, "
                f"{'both' if len(found) == 2 else 'all'} in {it}" for (_, guid), found in held.items()
                if len(found) > 1]
    others = {context.keys.doc(other, guid): (found[0], other) for (root, guid), found in held.items()
              for other in tree[root] if other not in {item.meta.name for item in found}}
    left_out = elsewhere([(other, item.guid) for item, other in others.values()]) if elsewhere else set()
    problems += [f"{item.guid}: {item.meta.cls.__name__} in {it}, {hybrids.get(other).__name__} in the part "
                 "--only leaves out" for item, other in others.values() if (other, item.guid) in left_out]
    stored = present(context, list(others))
    clashes = [f"{item.guid}: {item.meta.cls.__name__} in {it}, {hybrids.get(other).__name__} stored"
               for key, (item, other) in others.items() if key in stored]
    if not problems and not clashes:
        return
    fixes = ["one guid names one object across a hybrid and its subclass hybrids (their reverse lists would "
             "show one of them twice and the other never)"]
    if problems and command == "copy":
        fixes.append("in the source, store all but one of each again as a new object (a new guid) and delete "
                     "the old one (`dal check` lists them as duplicate_guid)")
    elif problems:
        fixes.append("give all but one of each a new guid in the file (str(uuid.uuid4()), and in the "
                     "relations pointing at it), or leave it out")
    if clashes:
        fixes.append(f"delete each stored one (or store it again as a new object) first, or {command} into "
                     "an empty namespace")
    where = f", counting those stored in namespace {context.namespace!r} of {context.persistent_url}"
    raise InvalidValueError(listing(f"{source} holds guids naming objects of two hybrids of one class tree"
                                    f"{where if clashes else ''}", problems + clashes, "; ".join(fixes)))


def preflight(context: Context, items: list[Item], unique: dict[str, tuple[Item, str, Any]], replace: bool,
              source: str, elsewhere: Elsewhere | None = None, command: str = "load") -> None:
    """Refuse, before writing, what the store would refuse: taken guids, taken values, missing targets.

    ``elsewhere`` (a selection of the source's hybrids) tells which missing targets the source
    holds outside it. The commits check all of it again, so a writer racing the load is still caught.
    """
    where = f"namespace {context.namespace!r} of {context.persistent_url}"
    if not replace:
        _refuse_stored(context, items, source, where)
    in_dump = {(item.meta.name, item.guid) for item in items}
    _refuse_taken(context, unique, in_dump, source, where)
    _refuse_missing_targets(context, items, in_dump, source, where, elsewhere, command)


def _refuse_stored(context: Context, items: list[Item], source: str, where: str) -> None:
    """Refuse objects of the dump whose guids are stored already (a load without ``replace``)."""
    stored = present(context, [item.doc_key for item in items])
    if stored:
        taken = [item.label for item in items if item.doc_key in stored]
        raise DalError(listing(f"{len(stored)} objects of {source} are already stored in {where}", taken,
                                "load into an empty namespace (--namespace), or pass --replace to "
                                "overwrite them (objects not in the dump are never touched)"))


def _refuse_taken(context: Context, unique: dict[str, tuple[Item, str, Any]], in_dump: set[tuple[str, str]],
                  source: str, where: str) -> None:
    """Refuse unique values and one-to-one targets of the dump that stored objects hold.

    A key naming an object that is not stored, or a stored one whose document does not hold the value
    (or point at the target), is stale (left by another client, or a crash of one): it blocks the value
    all the same, but the remedy is `dal check --repair`, not another value, nor a change of that object.
    """
    keys = context.keys
    clashes: list[tuple[str, bool, str, str]] = []  # (key, one-to-one?, its owner's hybrid and guid)
    for unique_key, entry in present(context, list(unique)).items():
        item = unique[unique_key][0]
        owner = entry.value.decode(errors="replace")
        onetoone = unique_key.startswith(f"{keys.root}r/")
        holder = unique_key[len(keys.root) + 2:].split("/", 1)[0] if onetoone else item.meta.name
        clashes.append((unique_key, onetoone, holder, owner))  # its own key too: stale unless it owns it
    if not clashes:
        return
    stored = present(context, [keys.doc(holder, owner) for *_, holder, owner in clashes if is_guid(owner)])
    lines: dict[tuple[bool, bool], list[str]] = {}  # (one-to-one?, stale?) -> problems
    for unique_key, onetoone, holder, owner in clashes:
        document = stored.get(keys.doc(holder, owner)) if is_guid(owner) else None
        owned = document is not None and _owns(keys, holder, document, unique_key)
        if owned and (holder, owner) == (unique[unique_key][0].meta.name, unique[unique_key][0].guid):
            continue  # the key of the object it replaces, which holds the value
        stale = ("an object that is not stored" if document is None
                 else "" if owned
                 else f"a stored object that does not {'point at' if onetoone else 'hold'} it")
        lines.setdefault((onetoone, bool(stale)), []).append(
            _taken_line(unique[unique_key], holder, owner, onetoone, stale, (holder, owner) in in_dump))
    for onetoone, error, what, advice in (
            (False, UniqueConstraintError, "values", "change those values in the file, or in the store"),
            (True, OneToOneError, "one-to-one targets",
             "point those objects elsewhere in the file, or unlink the stored ones")):
        held, stale_lines = lines.get((onetoone, False), []), lines.get((onetoone, True), [])
        if held or stale_lines:
            fixes = ([advice] if held else []) + ([STALE_ADVICE] if stale_lines else [])
            raise error(listing(f"{what} of {source} are taken in {where}", held + stale_lines,
                                "; ".join(fixes)))


def _owns(keys: Keys, holder: str, document: Entry, key: str) -> bool:
    """Tell whether the stored document of a ``holder`` object owns the unique or one-to-one ``key``.

    As `dal check` expects the keys a document owns (``DocumentPass.expect``, which a tool may not import):
    a unique key from the stored value, or from the value reads return (the keys of a property made unique
    later are built from it); a one-to-one key from the target the relation points at. A document that
    cannot be read may hold anything: its keys are not called stale, as `dal check` leaves them alone.
    """
    try:
        stored = decode(document.value)
    except ValueError:
        return True
    meta = hybrids.get(holder)._meta
    read = validate_document(meta, stored).document
    owned = {keys.unique(meta.name, prop.name, value) for prop in meta.unique
             for value in (stored.get(prop.name), read.get(prop.name)) if value is not None}
    owned.update(keys.onetoone(meta.name, relation.name, stored[relation.guid_field])
                 for relation in meta.relations.values()
                 if relation.onetoone and relation.target is not None
                 and valid_guid(stored.get(relation.guid_field)))
    return key in owned


#: what to do about a unique or one-to-one key naming an object that is not stored, or does not hold its value
STALE_ADVICE = ("run `dal check --repair` on that namespace, which deletes each stale key (or gives it to "
                "the stored object that holds the value, which the next load then names), then load again")


def _taken_line(taker: tuple[Item, str, Any], holder: str, owner: str, onetoone: bool, stale: str,
                moving: bool) -> str:
    """Say which stored object holds a value (or points at a target) an object of the dump takes.

    ``stale`` says why the key naming ``owner`` is stale (empty: that stored object holds the value).
    """
    item, name, value = taker
    holder_cls = hybrids.get(holder).__name__ if onetoone else item.meta.cls.__name__
    if stale:
        whose = (f", which a stale {'one-to-one' if onetoone else 'unique'} key gives to {holder_cls} "
                 f"{owner}{' itself' if (holder, owner) == (item.meta.name, item.guid) else ''}, {stale}")
    else:
        what = ("target", "one-to-one target") if onetoone else ("value", "unique value")
        whose = (f", which stored {holder_cls} {owner} {'points at' if onetoone else 'holds'}"
                 + (f" (that object is in the dump too, giving the {what[0]} up: a load cannot move a "
                    f"{what[1]} from one object to another; save that change through dal)" if moving else ""))
    if onetoone:
        relation = item.meta.relations[name]
        target = relation.target.__name__ if relation.target is not None else "object"
        return f"{relation.qualified} is one-to-one: {item.guid} points at {target} {value}{whose}"
    return f"{item.meta.cls.__name__}.{name}: {item.guid} has {value!r}{whose}"


def _refuse_missing_targets(context: Context, items: list[Item], in_dump: set[tuple[str, str]], source: str,
                            where: str, elsewhere: Elsewhere | None, command: str) -> None:
    """Refuse relations pointing at objects neither in the dump (nor in its part --only leaves out) nor
    stored."""
    keys = context.keys
    outside: dict[tuple[str, str], list[str]] = {}
    classes: dict[str, str] = {}
    for item in items:
        for relation in item.meta.relations.values():
            target = item.document[relation.guid_field]
            if target is None or relation.target is None:
                continue
            target_name = relation.target._meta.name
            if (target_name, target) not in in_dump:
                classes[target_name] = relation.target.__name__
                outside.setdefault((target_name, target), []).append(
                    f"{item.label}.{relation.name} points at {relation.target.__name__} {target}")
    if not outside:
        return
    stored = present(context, [keys.doc(*at) for at in outside])
    missing = {at: lines for at, lines in outside.items() if keys.doc(*at) not in stored}
    left_out = elsewhere(list(missing)) if elsewhere is not None and missing else set()
    advice = []
    if left_out:
        names = sorted({classes[name] for name, _ in left_out})
        advice.append(f"add {', '.join(names)} to --only (or {command} {'it' if len(names) == 1 else 'them'} "
                      "first)")
    if len(left_out) < len(missing):
        advice.append("add those objects to the dump, or clear the relations")
    lines = [f"{line}{', which --only leaves out' if at in left_out else ''}" for at, found in missing.items()
             for line in found]
    if lines:
        what = "the part of it --only selects" if left_out else "it"
        raise ObjectNotFoundError(listing(f"relations of {source} point at objects neither in {what} nor "
                                           f"stored in {where}", lines, "; ".join(advice)))

"""Registration is all or nothing: a class refused for a clash leaves the registry as it was.

Without that, a relation the refused class left waiting would be linked (and refused) again by
every later class declaration in the process, and the refused class would stay listed for the
CLI, the ERD and migrations.
"""

from __future__ import annotations

import re
import uuid

import pytest

from dal import DataObject, Dynamic, Property, Relation
from dal.config import Context
from dal.exceptions import (
    ConfigurationError,
    InvalidQueryError,
    InvalidRelationError,
    InvalidValueError,
    NoSuchFieldError,
)
from dal.model.registry import hybrids
from dal.model.validation import validate_document
from dal.query.grammar import compile_query
from dal.tools.erd.diagram import diagram


def _state(cls: type[DataObject]) -> tuple[object, ...]:
    """What registering another class may change on ``cls``: its reverse accessors and attributes."""
    return dict(cls._meta.reverse), cls._declared, sorted(vars(cls))  # type: ignore[attr-defined]


def test_a_class_refused_for_its_reverse_accessor_leaves_nothing_behind() -> None:
    class RgOwner(DataObject):
        __properties = [Property("name", str), Property("label", str)]

    before, pending = _state(RgOwner), hybrids.unresolved()
    with pytest.raises(ConfigurationError, match="already has label"):
        class RgBad(DataObject):
            __relations = [Relation("owner", RgOwner, "label")]

    assert "RgBad" not in [cls.__name__ for cls in hybrids.all()]
    assert hybrids.unresolved() == pending
    assert _state(RgOwner) == before

    class RgFine(DataObject):  # the next class declared is not refused for RgBad's relation
        __properties = [Property("name", str)]
        __relations = [Relation("owner", RgOwner, "fines")]

    assert hybrids.get("RgFine") is RgFine
    assert "fines" in RgOwner._meta.reverse and "label" not in RgOwner._meta.reverse


def test_a_target_refused_for_a_waiting_relation_leaves_the_relation_waiting() -> None:
    class RgWaiting(DataObject):
        __relations = [Relation("site", "RgSite", "name")]  # clashes with RgSite.name, once declared

    relation = RgWaiting._meta.relations["site"]
    assert relation in hybrids.unresolved()
    with pytest.raises(ConfigurationError, match="already has name"):
        class RgSite(DataObject):
            __properties = [Property("name", str)]

    assert relation in hybrids.unresolved() and relation.target is None
    assert "RgSite" not in [cls.__name__ for cls in hybrids.all()]

    class RgUnrelated(DataObject):  # unrelated declarations go on
        __properties = [Property("name", str)]

    assert hybrids.get("RgUnrelated") is RgUnrelated


def test_a_class_whose_second_relation_clashes_keeps_none_of_its_first() -> None:
    """Linking stops at the second relation: the first one's accessor, installed already, is taken back."""
    class RgRack(DataObject):
        __properties = [Property("name", str)]

    class RgTaken(DataObject):
        __relations = [Relation("rack", RgRack, "servers")]

    before = _state(RgRack)
    with pytest.raises(ConfigurationError, match="both name the reverse accessor"):
        class RgTwice(DataObject):
            __relations = [Relation("home", RgRack, "homed"), Relation("rack", RgRack, "servers")]

    assert _state(RgRack) == before
    assert not hasattr(RgRack, "homed") and not hasattr(RgRack, "homed_guids")
    assert RgRack._meta.reverse["servers"].source is RgTaken


@pytest.mark.parametrize("onetoone", [False, True])
def test_a_foreign_key_naming_another_relations_generated_accessor_is_refused(onetoone: bool) -> None:
    """``children_guids`` (or a one-to-one's ``solo_guid``) belongs to the relation that generated it:
    a later relation naming it would have served its own objects there instead."""
    class RgParent(DataObject):
        __properties = [Property("name", str)]

    class RgChild(DataObject):
        __relations = [Relation("parent", RgParent, "kids", onetoone=onetoone)]

    generated = "kids_guid" if onetoone else "kids_guids"
    before = _state(RgParent)
    with pytest.raises(ConfigurationError, match=f"already has {generated}"):
        class RgTag(DataObject):
            __relations = [Relation("parent", RgParent, generated)]
    assert _state(RgParent) == before


def test_a_foreign_key_whose_generated_accessor_is_another_relations_is_refused() -> None:
    """The other order: ``items`` generates ``items_guids``, which another relation is named."""
    class RgOwner2(DataObject):
        __properties = [Property("name", str)]

    class RgA(DataObject):
        __relations = [Relation("owner", RgOwner2, "items_guids")]

    before = _state(RgOwner2)
    with pytest.raises(ConfigurationError, match="already has items_guids"):
        class RgB(DataObject):
            __relations = [Relation("owner", RgOwner2, "items")]
    assert _state(RgOwner2) == before
    assert RgOwner2._meta.reverse["items_guids"].source is RgA


def test_a_foreign_key_naming_a_dataobject_method_is_refused() -> None:
    """``BackendType.where()`` would have become the reverse list of a relation named ``where``."""
    class RgKind(DataObject):
        __properties = [Property("name", str)]

    before = _state(RgKind)
    with pytest.raises(ConfigurationError, match="already has where"):
        class RgUser(DataObject):
            __relations = [Relation("kind", RgKind, "where")]
    assert _state(RgKind) == before and callable(RgKind.where)


def test_two_relations_of_one_class_naming_one_reverse_accessor_are_refused() -> None:
    """As for two classes: one accessor listing the objects of two relations, one of them one-to-one,
    would read fresh, valid data as a broken one-to-one."""
    class RgPort(DataObject):
        __properties = [Property("name", str)]

    with pytest.raises(ConfigurationError, match=r"RgCable\.b and RgCable\.a both name the reverse accessor "
                                                 r"RgPort\.cables"):
        class RgCable(DataObject):
            __relations = [Relation("a", RgPort, "cables", onetoone=True, mandatory=False),
                           Relation("b", RgPort, "cables", mandatory=False)]

    class RgCord(DataObject):
        __relations = [Relation("port", RgPort, "cords", mandatory=False)]

    with pytest.raises(ConfigurationError, match=r"both name the reverse accessor RgPort\.cords"):
        class RgLongCord(RgCord):  # a subclass's new relation, not its copy of the parent's
            __relations = [Relation("spare", RgPort, "cords", mandatory=False)]

    class RgShortCord(RgCord):  # the inherited relation still shares its parent's accessor
        __properties = [Property("length", int, default=1)]

    assert RgPort._meta.reverse["cords"].inherited == [RgShortCord._meta.relations["port"]]


@pytest.mark.parametrize("kind", ["properties", "relations", "dynamics"])
def test_a_name_listed_twice_in_one_class_is_refused(kind: str) -> None:
    """The second spec silently replaced the first (its unique flag, its reverse accessor)."""
    specs = {"properties": [Property("a", str), Property("a", int, unique=True)],
             "relations": [Relation("a", None, "a1", mandatory=False),
                           Relation("a", None, "a2", mandatory=False)],
             "dynamics": [Dynamic("a", int, 5), Dynamic("a", str, 5)]}[kind]
    with pytest.raises(InvalidValueError, match="'a' is declared twice"):
        type("RgTwiceNamed", (DataObject,), {f"_RgTwiceNamed__{kind}": specs, "__module__": __name__,
                                             "_a": lambda self: 1})


def test_a_subclass_redeclaring_its_parent_s_relation_as_another_kind_or_target_is_refused() -> None:
    """The redeclared relation shared its parent's accessor: a one-to-one one redeclared many-to-one
    let three objects point at one target (the accessor then raised), the other way round refused a
    second save while the accessor stayed a list; another target split the accessor unseen."""
    class RgHolder(DataObject):
        __properties = [Property("name", str)]

    class RgOther(DataObject):
        __properties = [Property("name", str)]

    class RgPassport(DataObject):
        __relations = [Relation("holder", RgHolder, "passport", onetoone=True, mandatory=False)]

    class RgPet(DataObject):
        __relations = [Relation("owner", RgHolder, "pets", mandatory=False)]

    before, pending = _state(RgHolder), hybrids.unresolved()
    for parent, redeclared, wrong in (
            (RgPassport, Relation("holder", RgHolder, "passport", mandatory=False), "as many-to-one"),
            (RgPet, Relation("owner", RgHolder, "pets", onetoone=True, mandatory=False), "as one-to-one"),
            (RgPassport, Relation("holder", RgOther, "passport", onetoone=True, mandatory=False),
             "pointing at RgOther")):
        with pytest.raises(ConfigurationError, match=rf"RgSub\.{redeclared.name} redeclares "
                                                     rf"{parent.__name__}\.{redeclared.name} .* {wrong};"
                                                     r".*or give RgSub\.\w+ another foreign_key"):
            type("RgSub", (parent,), {"_RgSub__relations": [redeclared], "__module__": __name__})
        assert _state(RgHolder) == before and hybrids.unresolved() == pending

    class RgMandatoryPet(RgPet):  # only `mandatory` differs: it still shares its parent's accessor
        __relations = [Relation("owner", RgHolder, "pets", mandatory=True)]

    class RgOwnPassport(RgPassport):  # another foreign_key: a relation of its own, of any kind
        __relations = [Relation("holder", RgOther, "own_passports", mandatory=False)]

    assert RgHolder._meta.reverse["pets"].inherited == [RgMandatoryPet._meta.relations["owner"]]
    assert RgOther._meta.reverse["own_passports"].source is RgOwnPassport


def test_a_redeclared_relation_is_refused_when_its_parent_s_target_registers_after_it() -> None:
    """A parent waiting for a string target links after its subclass: checked then."""
    class RgJamb(DataObject):
        __properties = [Property("name", str)]

    class RgLaterDoor(DataObject):
        __relations = [Relation("frame", "RgLaterFrame", "doors", mandatory=False)]

    class RgSlidingDoor(RgLaterDoor):
        __relations = [Relation("frame", RgJamb, "doors", mandatory=False)]

    assert RgJamb._meta.reverse["doors"].source is RgSlidingDoor
    with pytest.raises(ConfigurationError, match=r"RgSlidingDoor\.frame redeclares RgLaterDoor\.frame .* "
                                                 r"pointing at RgJamb; .*point it at RgLaterFrame"):
        class RgLaterFrame(DataObject):
            __properties = [Property("name", str)]
    assert RgLaterDoor._meta.relations["frame"] in hybrids.unresolved()


def test_a_class_name_several_hybrids_share_links_the_hybrid_of_the_nearest_module() -> None:
    """A string names the hybrid of the relation's own module before another module's of the same
    class name, whichever registered first: a module writing ``"Widget"`` before its own ``class Widget``
    while a library's ``Widget`` is registered already; and the library's own relation to ``"Gear"``
    keeps its sibling module's ``Gear`` although an application's ``Gear`` registered first."""

    class RnGear(DataObject, hybrid_name="rngear_app"):  # an application's, registered first
        __module__ = "app.models"
        __properties = [Property("name", str)]

    class RnWidget(DataObject, hybrid_name="rnwidget_lib"):  # a library's
        __module__ = "lib.parts.widget"
        __properties = [Property("name", str)]
        __relations = [Relation("gear", "RnGear", "widgets", mandatory=False)]

    class RnServer(DataObject, hybrid_name="rnserver_app"):  # the application's, naming its own Widget
        __module__ = "app.models"
        __properties = [Property("name", str)]
        __relations = [Relation("widget", "RnWidget", "servers", mandatory=False)]

    library_widget, application_gear = RnWidget, RnGear
    assert RnServer._meta.relations["widget"].target is library_widget  # the only one so far
    assert RnWidget._meta.relations["gear"].target is application_gear

    class RnWidget(DataObject, hybrid_name="rnwidget_app"):  # type: ignore[no-redef]
        __module__ = "app.models"
        __properties = [Property("name", str)]

    class RnGear(DataObject, hybrid_name="rngear_lib"):  # type: ignore[no-redef]
        __module__ = "lib.parts.gear"
        __properties = [Property("name", str)]

    assert RnServer._meta.relations["widget"].target is RnWidget
    assert "servers" in vars(RnWidget) and "servers" not in vars(library_widget)
    assert "servers" not in library_widget._declared and "servers_guids" in RnWidget._declared
    assert library_widget._meta.relations["gear"].target is RnGear
    assert "widgets" in vars(RnGear) and "widgets" not in vars(application_gear)

    class RnRack(DataObject, hybrid_name="rnrack_lib"):  # both registered: the nearest is linked at once
        __module__ = "lib.parts.rack"
        __properties = [Property("name", str)]
        __relations = [Relation("gear", "RnGear", "racks", mandatory=False)]

    assert RnRack._meta.relations["gear"].target is RnGear


def test_hybrids_as_near_as_each_other_link_the_latest_registered_whichever_came_first() -> None:
    """Two modules as near the relation's own: the latest registered takes it, as a relation resolved
    after both would, so two relations of one module never link different hybrids by import order."""

    class RtGear(DataObject, hybrid_name="rtgear_a"):
        __module__ = "app.a"
        __properties = [Property("name", str)]

    first = RtGear

    class RtRackOne(DataObject, hybrid_name="rtrack_one"):
        __module__ = "app.models"
        __properties = [Property("name", str)]
        __relations = [Relation("gear", "RtGear", "racks_one", mandatory=False)]

    class RtGear(DataObject, hybrid_name="rtgear_b"):  # type: ignore[no-redef]
        __module__ = "app.b"
        __properties = [Property("name", str)]

    class RtRackTwo(DataObject, hybrid_name="rtrack_two"):
        __module__ = "app.models"
        __properties = [Property("name", str)]
        __relations = [Relation("gear", "RtGear", "racks_two", mandatory=False)]

    assert RtRackOne._meta.relations["gear"].target is RtGear is not first
    assert RtRackTwo._meta.relations["gear"].target is RtGear


def test_a_relation_to_an_abstract_base_says_to_point_it_at_a_hybrid_deriving_from_it() -> None:
    """The class was refused as "not a hybrid (a DataObject subclass)", which it is; the string was
    accepted, then its first use said "has not been declared; import the module" (it was)."""
    class RgNamed(DataObject, abstract=True):
        __properties = [Property("name", str, mandatory=False)]

    class RgDisk(RgNamed):
        pass

    remedy = (r"which is an abstract base \(abstract=True\), not a hybrid: .* point the relation "
              r"at a hybrid deriving from it \(RgDisk\)")
    with pytest.raises(InvalidValueError, match=r"RgBadLink\.owner: foreign_type RgNamed, " + remedy):
        class RgBadLink(DataObject):
            __relations = [Relation("owner", RgNamed, "bad_links", mandatory=False)]

    class RgLink(DataObject):
        __relations = [Relation("owner", "RgNamed", "links", mandatory=False)]

    with pytest.raises(InvalidRelationError, match=r"RgLink\.owner points at 'RgNamed', " + remedy):
        RgLink(data={"owner": RgDisk()})

    class RgElsewhere(DataObject):  # a name no class has: not declared yet, and maybe an abstract base
        __relations = [Relation("owner", "RgNowhere", "elsewheres", mandatory=False)]

    with pytest.raises(InvalidRelationError, match=r"has not been declared; .* abstract=True base"):
        RgElsewhere(data={"owner": RgDisk()})


def test_every_path_meeting_a_relation_to_an_abstract_base_names_it_so(local: Context) -> None:
    """The query builder, the grammar, ``dal erd``, ``dal check``/``load`` and a save said "not declared;
    import the module" (which cannot help) or, the grammar, "RpLink.owner is not a relation" (it is)."""
    class RpNamed(DataObject, abstract=True):
        __properties = [Property("name", str, mandatory=False)]

    class RpDisk(RpNamed):
        pass

    class RpLink(DataObject):
        __relations = [Relation("owner", "RpNamed", "links", mandatory=False)]

    remedy = (r"RpLink\.owner points at 'RpNamed', which is an abstract base \(abstract=True\), not a "
              r"hybrid: .* deriving from it \(RpDisk\)")
    with pytest.raises(NoSuchFieldError, match=r"RpLink\.owner\.name: " + remedy):
        RpLink.owner.name  # noqa: B018 -- the read is the test
    with pytest.raises(InvalidQueryError, match=r"in 'owner\.name', " + remedy):
        compile_query(RpLink._meta, {"type": "AND", "items": [("owner.name", "EQUALS", "x")]})
    with pytest.raises(ConfigurationError, match=remedy):
        diagram([RpLink])
    problems = validate_document(RpLink._meta, {"owner_guid": str(uuid.uuid4())}).problems
    assert [problem.field for problem in problems] == ["owner_guid"]
    assert re.fullmatch(remedy, problems[0].message)
    assert RpLink.owner.foreign_key == "links"  # the relation's own settings still read
    link = RpLink()
    link.owner_guid = str(uuid.uuid4())
    with pytest.raises(InvalidRelationError, match=remedy + r" \(the link cannot be checked"):
        link.save()


def test_a_relation_to_a_name_not_declared_yet_still_says_to_import_it() -> None:
    class RpLater(DataObject):
        __relations = [Relation("owner", "RpNotYet", "laters", mandatory=False)]

    remedy = r"RpLater\.owner points at hybrid 'RpNotYet', which has not been declared; import the module"
    with pytest.raises(NoSuchFieldError, match=remedy):
        RpLater.owner.name  # noqa: B018 -- the read is the test
    with pytest.raises(ConfigurationError, match=remedy + r" that declares it \(dal erd --hybrids"):
        diagram([RpLater])
    problems = validate_document(RpLater._meta, {"owner_guid": str(uuid.uuid4())}).problems
    assert re.match(remedy, problems[0].message)


class _RgMixin:
    """A plain base of a hybrid: what it defines is the hybrid's own as much as its body's."""

    def mixed(self) -> str:
        return "mixed"


@pytest.mark.parametrize("member", ["method", "held", "limit", "mixed", "gear_guids"])
def test_a_foreign_key_naming_what_the_target_defines_itself_is_refused(member: str) -> None:
    """A method, a property, a class attribute (or one of a plain base) replaced by the reverse list:
    ``tool.method()`` would have raised TypeError 'DataList' object is not callable."""
    class RgTool(_RgMixin, DataObject):
        __properties = [Property("name", str)]
        limit = 5

        def method(self) -> str:
            return "method"

        def gear_guids(self) -> str:  # the name an accessor ``gear`` generates besides itself
            return "guids"

        @property
        def held(self) -> str:
            return "held"

    before, fk = _state(RgTool), member.removesuffix("_guids")
    owner = "_RgMixin" if member == "mixed" else "RgTool"
    with pytest.raises(ConfigurationError, match=rf"already has {member}; give the relation another "
                                                 rf"foreign_key \(or rename {owner}\.{member},"):
        class RgUser2(DataObject):
            __relations = [Relation("tool", RgTool, fk, mandatory=False)]
    assert _state(RgTool) == before and "RgUser2" not in [cls.__name__ for cls in hybrids.all()]
    tool = RgTool(data={"name": "t"})
    assert (tool.method(), tool.gear_guids(), tool.held, tool.limit, tool.mixed()) == (
        "method", "guids", "held", 5, "mixed")


def test_a_target_declared_later_with_a_method_a_waiting_relation_names_is_refused() -> None:
    """Named by a string before it exists: refused when it is declared, leaving the relation waiting."""
    class RgWaits(DataObject):
        __relations = [Relation("tool", "RgLateTool", "items", mandatory=False)]

    relation, pending = RgWaits._meta.relations["tool"], hybrids.unresolved()
    with pytest.raises(ConfigurationError, match=r"already has items; .* \(or rename RgLateTool\.items,"):
        class RgLateTool(DataObject):
            __properties = [Property("name", str)]

            def items(self) -> str:
                return "items"

    assert hybrids.unresolved() == pending and relation.target is None
    assert "RgLateTool" not in [cls.__name__ for cls in hybrids.all()]

    class RgLateTool(DataObject):  # type: ignore[no-redef]  # declared again without it: linked
        __properties = [Property("name", str)]

    assert relation.target is RgLateTool and "items" in RgLateTool._meta.reverse


def test_a_target_declared_again_with_a_method_its_relation_names_is_refused() -> None:
    """The other order: the relation's accessor is on the target, whose module is loaded again (the
    same class, now with a method of the accessor's name) and takes the relation over: refused."""
    def declare(method: bool) -> type[DataObject]:
        class RgReloaded(DataObject):
            __properties = [Property("name", str)]
            if method:
                def items(self) -> str:
                    return "items"
        return RgReloaded

    first = declare(method=False)

    class RgHolds(DataObject):
        __relations = [Relation("tool", "RgReloaded", "items", mandatory=False)]

    before = _state(first)
    with pytest.raises(ConfigurationError, match=r"already has items; .* \(or rename RgReloaded\.items,"):
        declare(method=True)
    assert hybrids.get("RgReloaded") is first and _state(first) == before
    assert RgHolds._meta.relations["tool"].target is first

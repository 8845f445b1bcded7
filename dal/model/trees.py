"""Class trees: a hybrid and its subclass hybrids, across which one guid names one object.

Each hybrid of a tree stores its objects under its own name, and a reverse list spanning the tree
tells them apart by guid alone; so a guid stored under two of them would show one object twice and
the other never. A create checks, in its commit, that no other hybrid of its tree stores its guid
(:func:`dal.objects.transaction.plan_write`); ``dal load``, ``dal copy``, ``from_model()`` and
``dal check`` look for such a pair with :func:`class_trees`.
"""

from __future__ import annotations

from dal.model.registry import hybrids


def tree_root(cls: type) -> str:
    """Return the logical name of the most basic hybrid ``cls`` derives from (its own if none)."""
    return str(next(vars(base)["_meta"].name for base in reversed(cls.__mro__) if "_meta" in vars(base)))


def class_trees() -> dict[str, list[str]]:
    """Return the registered hybrids' logical names by their class tree's :func:`tree_root`."""
    trees: dict[str, list[str]] = {}
    for cls in hybrids.all():
        trees.setdefault(tree_root(cls), []).append(cls._meta.name)
    return trees


#: the last :func:`class_trees`, and the registry generation it was derived at: every create of a hybrid
#: with a tree asks, and deriving it reads every registered hybrid
_derived: tuple[int, dict[str, list[str]]] = (-1, {})


def tree_kin(cls: type) -> list[str]:
    """Return the logical names of the other hybrids of ``cls``'s class tree, sorted (none, the usual case,
    without a registry lookup: a hybrid with no hybrid base and no subclass has no tree)."""
    global _derived
    if not cls.__subclasses__() and not any("_meta" in vars(base) for base in cls.__mro__[1:]):
        return []
    generation, trees = _derived
    if generation != hybrids.generation:  # a hybrid registered since (read first: one racing is seen next)
        generation = hybrids.generation
        _derived = generation, (trees := class_trees())
    name = vars(cls)["_meta"].name
    return [other for other in trees.get(tree_root(cls), []) if other != name]

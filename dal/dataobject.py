"""``from dal.dataobject import DataObject``: the import path the public contract names.

The class lives in :mod:`dal.objects.dataobject` (the objects layer); this module only keeps the
contract's path working.
"""

from dal.objects.dataobject import DataObject, TypedObject

__all__ = ["DataObject", "TypedObject"]

"""dal: a hybrid data-access layer.

Declare hybrids (``DataObject`` subclasses listing ``Property``, ``Relation`` and ``Dynamic``
specs, or declaring them by annotation: ``name: str = Property(unique=True)``); their properties
persist in a durable key-value store (SQLite by default, etcd for clusters) and their dynamics
are cached in a volatile store (process memory or memcached). A hybrid declaring a ``Mirror`` is
kept in sync with a slow remote API (``dal.mirror``).

``Property``, ``Relation`` and ``Dynamic`` here take both forms: with a name they are the specs of
:mod:`dal.structures`, with keywords only the annotated declarations of :mod:`dal.model.declared`.
"""

from dal import exceptions, mirror
from dal.config import configure
from dal.model.declared import Dynamic, Property, Relation
from dal.objects.bulk import save_many
from dal.objects.dataobject import DataObject, TypedObject
from dal.query.datalist import DataList
from dal.structures import Mirror

__all__ = ["DataList", "DataObject", "Dynamic", "Mirror", "Property", "Relation", "TypedObject", "configure",
           "exceptions",
           "mirror", "save_many"]
__version__ = "0.1.0"

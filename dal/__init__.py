"""dal: a hybrid data-access layer.

Declare hybrids (``DataObject`` subclasses listing ``Property``, ``Relation`` and ``Dynamic``
specs); their properties persist in a durable key-value store (SQLite by default, etcd for
clusters) and their dynamics are cached in a volatile store (process memory or memcached). A
hybrid declaring a ``Mirror`` is kept in sync with a slow remote API (``dal.mirror``).
"""

from dal import exceptions, mirror
from dal.config import configure
from dal.objects.dataobject import DataObject
from dal.query.datalist import DataList
from dal.structures import Dynamic, Mirror, Property, Relation

__all__ = ["DataList", "DataObject", "Dynamic", "Mirror", "Property", "Relation", "configure", "exceptions",
           "mirror"]
__version__ = "0.1.0"

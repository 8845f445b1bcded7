"""dal: a hybrid data-access layer.

Declare hybrids (``DataObject`` subclasses listing ``Property``, ``Relation`` and ``Dynamic``
specs); their properties persist in a durable key-value store (SQLite by default, etcd for
clusters) and their dynamics are cached in a volatile store (process memory or memcached).
"""

from dal import exceptions
from dal.config import configure
from dal.objects.dataobject import DataObject
from dal.query.datalist import DataList
from dal.structures import Dynamic, Property, Relation

__all__ = ["DataList", "DataObject", "Dynamic", "Property", "Relation", "configure", "exceptions"]
__version__ = "0.1.0"

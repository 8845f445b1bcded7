"""``from dal.datalist import DataList``: the import path the public contract names.

The class lives in :mod:`dal.query.datalist` (the query layer); this module only keeps the
contract's path working.
"""

from dal.query.datalist import DataList

__all__ = ["DataList"]

"""A hybrid in two releases, for rolling-deploy tests: ``DAL_TEST_OLD_MODEL=1`` (set in a subprocess)
declares the older one, without the ``added`` and ``level`` properties the newer one declares."""

from __future__ import annotations

import os
from typing import Any

from dal import DataObject, Property

_properties: list[Property[Any]] = [Property("name", str)]
if os.environ.get("DAL_TEST_OLD_MODEL") != "1":
    _properties += [Property("added", str, default="dflt", indexed=True), Property("level", int, default=0)]


class Rolling(DataObject, hybrid_name="rolling"):
    """Stored by both releases at once, as in a rolling deploy."""

    __properties = _properties

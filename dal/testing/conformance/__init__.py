"""The backend conformance suite: what it means to be a dal store.

Subclass :class:`PersistentStoreContract` or :class:`VolatileStoreContract` in a test
module (name the subclass ``Test...``) and provide two fixtures:

``store``
    an opened store of the backend under test;
``prefix``
    a unique ``str`` ending in ``'/'``; every key a test touches starts with it, so the
    suite can run against a server other tests share.

Tests choose behaviour from capability attributes (``store.shared``), never from
backend names, so a third-party backend runs the same contract unchanged.
"""

from dal.testing.conformance.persistent import PersistentStoreContract
from dal.testing.conformance.values import MEGABYTE, ODD_VALUES
from dal.testing.conformance.volatile import VolatileStoreContract

__all__ = ["MEGABYTE", "ODD_VALUES", "PersistentStoreContract", "VolatileStoreContract"]

"""Transfer of stored data: ``dal dump``, ``dal load`` and ``dal copy``."""

"""The cache machinery: leased fills and signed entries, the commit journal and its sweeps,
monotonic reads, version tokens, and statistics across processes.

Above the stores (:mod:`dal.backends`) and the key layout (:mod:`dal.keys`); below the
configured context (:mod:`dal.config`) that assembles them.
"""

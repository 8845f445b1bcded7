"""The query engine: the grammar (validation into a frozen tree), the planner, cached results,
and ``DataList``.
"""

"""Benchmarks of dal against the raw clients it wraps: ``python -m bench`` (see docs/benchmarks.md).

Every benchmark reports dal's rate as a ratio to the raw client measured in the same run,
with the two interleaved round by round, because the machines this runs on are small and
shared: absolute rates move with the neighbours, ratios mostly do not.
"""

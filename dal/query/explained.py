"""What ``DataList.explain()`` returns: how a query was (or would be) answered, step by step."""

from __future__ import annotations

from dataclasses import dataclass

from dal.query.planner import Step


@dataclass(frozen=True)
class QueryPlan:
    """What ``DataList.explain()`` returns: how the query was (or would be) answered."""

    hybrid: str
    query: str
    cache: str
    steps: tuple[Step, ...]
    count: int | None

    def __str__(self) -> str:
        lines = [f"DataList of {self.hybrid} where {self.query}"]
        lines.append(f"  result cache: {_CACHE_STATES.get(self.cache, self.cache)}")
        lines += [f"  {step}" for step in self.steps]
        if self.count is not None:
            lines.append(f"  {self.count} objects")
        return "\n".join(lines)


_CACHE_STATES = {
    "hit": "hit (the guids read from the volatile store, not the durable one; iterating reads the objects: "
           "those in the object cache from it, the others from the durable store)",
    "miss": "miss (computed, then cached until a write changes a field it reads)",
    "off": "off (the query reads a dynamic, or the volatile store cannot be trusted to be exact)",
    "not run": "not run yet",
}

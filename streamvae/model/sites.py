"""Site → embedding-slot assignment. Pure.

Slot 0 is the pooled / unknown site. Sites keep the slot they had in the
previous model (so warm starts keep their embeddings); new sites take the lowest
free slots, most records first (ties by name). When there are more sites than
`capacity − 1` slots, the sites with the fewest records get no slot: they are
trained and scored through slot 0 and are not "known".
"""

from __future__ import annotations

from collections.abc import Mapping


def assign_slots(
    counts: Mapping[str, int], capacity: int, previous: Mapping[str, int] | None = None
) -> dict[str, int]:
    """counts: records per site in the training data -> {site: slot in 1..capacity-1}."""
    prev = previous or {}
    slots: dict[str, int] = {s: prev[s] for s in counts if s in prev and 0 < prev[s] < capacity}
    used = set(slots.values())
    free = (i for i in range(1, capacity) if i not in used)
    for site in sorted((s for s in counts if s not in slots), key=lambda s: (-counts[s], s)):
        slot = next(free, None)
        if slot is None:
            break
        slots[site] = slot
    return dict(sorted(slots.items(), key=lambda kv: kv[1]))

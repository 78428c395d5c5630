"""Which primary of a cluster serves each slot, as the cluster last said (``CLUSTER SLOTS``).

The publish sender groups a batch's channels by the primary that serves them,
so one script call carries a node's share of a burst rather than one call per
slot. The map may be stale (a failover, a migration): a script sent with it
then fails before writing anything (it reads every key first), the batch goes
again slot by slot, and the map is read again (at most every
:data:`REFRESH_EVERY` seconds).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ._connect import glide_module

if TYPE_CHECKING:
    from glide import GlideClient

__all__ = ["REFRESH_EVERY", "SlotMap"]

logger = logging.getLogger("eventstream")

#: Seconds between two reads of the map, at least.
REFRESH_EVERY = 0.1
_SLOTS = 16384


class SlotMap:
    """The primary serving each slot (an index per primary; -1: unknown)."""

    __slots__ = ("_owner", "_read_at", "stale")

    def __init__(self) -> None:
        self._owner: list[int] = []
        self._read_at = -REFRESH_EVERY
        #: Whether a script found the map wrong since it was read.
        self.stale = True

    def node_of(self, slot: int) -> int:
        """The index of the primary serving ``slot`` (-1: not known)."""
        owner = self._owner
        return owner[slot] if owner else -1

    async def refresh(self, client: GlideClient) -> None:
        """Read the map again if it is stale, at most every :data:`REFRESH_EVERY` seconds.

        Never raises: a failed read leaves the map unknown (batches then go slot by slot).
        """
        now = time.monotonic()
        if not self.stale or now - self._read_at < REFRESH_EVERY:
            return
        self._read_at = now
        glide = glide_module()
        try:
            reply = await client.custom_command(["CLUSTER", "SLOTS"])
        except glide.GlideError as exc:
            logger.warning("broker: cannot read the cluster's slot map: %s: %s", type(exc).__name__, exc)
            self._owner = []
            return
        self._owner = _owners(reply)
        self.stale = False


def _owners(reply: Any) -> list[int]:
    # CLUSTER SLOTS: [[first, last, [host, port, id, ...], replicas...], ...]
    owner = [-1] * _SLOTS
    nodes: dict[tuple[bytes, int], int] = {}
    for entry in reply:
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        index = nodes.setdefault((bytes(primary[0]), int(primary[1])), len(nodes))
        owner[first : last + 1] = [index] * (last - first + 1)
    return owner

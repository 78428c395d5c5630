"""What differs between the event loops anyio runs on (asyncio, trio), behind one interface each.

The backend is chosen once (per waiter factory, per response's disconnect watch, per loop's signal
handle), never per event.
"""

from ._disconnect import DisconnectWatch
from ._interfaces import Waiter, Watch
from ._library import declare_running_library
from ._loop import LoopHandle
from ._waiter import current_waiter, waiter_factory

__all__ = [
    "DisconnectWatch",
    "LoopHandle",
    "Waiter",
    "Watch",
    "current_waiter",
    "declare_running_library",
    "waiter_factory",
]

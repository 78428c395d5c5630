"""What differs between the event loops anyio runs on (asyncio, trio), behind one interface each.

The backend is chosen once (per waiter factory, per connection's watch), never per event.
"""

from ._asyncio import no_context
from ._disconnect import DisconnectWatch
from ._waiter import Waiter, current_waiter, waiter_factory

__all__ = ["DisconnectWatch", "Waiter", "current_waiter", "no_context", "waiter_factory"]

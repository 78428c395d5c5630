"""The hub: the subscribers of one stream, and delivering events to them."""

from ._hub import Hub, SlowConsumerPolicy
from ._subscriber import Channel, EventStreamStatistics, Subscriber, clock

__all__ = ["Channel", "EventStreamStatistics", "Hub", "SlowConsumerPolicy", "Subscriber", "clock"]

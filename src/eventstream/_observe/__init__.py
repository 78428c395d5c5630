"""What an event stream counts for monitoring, and its rate-limited log lines.

The counters are plain ints, kept where the library already counts (a
connection counts into its endpoint's :class:`TemplateCounters`); a
collector (``eventstream.prometheus``) reads them when it is scraped, so
nothing calls a metrics library per event.
"""

from ._counters import (
    END_REASONS,
    FEED_LAG_BUCKETS,
    MAX_TEMPLATES,
    OTHER_TEMPLATE,
    PUBLISH_BUCKETS,
    RUN_TEMPLATE,
    UNCOUNTED,
    Histogram,
    Observed,
    TemplateCounters,
)
from ._logging import RateLimitedLog

__all__ = [
    "END_REASONS",
    "FEED_LAG_BUCKETS",
    "MAX_TEMPLATES",
    "OTHER_TEMPLATE",
    "PUBLISH_BUCKETS",
    "RUN_TEMPLATE",
    "UNCOUNTED",
    "Histogram",
    "Observed",
    "RateLimitedLog",
    "TemplateCounters",
]

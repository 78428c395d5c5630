"""What an event stream counts for monitoring, and its rate-limited log lines.

The counters are plain ints, kept where the library already counts (a
connection counts into its endpoint's :class:`TemplateCounters`); a
collector (``eventstream.prometheus``) reads them when it is scraped, so
nothing calls a metrics library per event.
"""

from ._counters import (
    END_REASONS,
    MAX_TEMPLATES,
    OTHER_TEMPLATE,
    RUN_TEMPLATE,
    UNCOUNTED,
    Observed,
    PublishTiming,
    TemplateCounters,
)
from ._logging import RateLimitedLog

__all__ = [
    "END_REASONS",
    "MAX_TEMPLATES",
    "OTHER_TEMPLATE",
    "RUN_TEMPLATE",
    "UNCOUNTED",
    "Observed",
    "PublishTiming",
    "RateLimitedLog",
    "TemplateCounters",
]

"""What an event stream counts for monitoring, and its health answers.

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
    unsubscribe_counted,
)
from ._health import HealthEndpoint, Readiness, check_readiness

__all__ = [
    "END_REASONS",
    "MAX_TEMPLATES",
    "OTHER_TEMPLATE",
    "RUN_TEMPLATE",
    "UNCOUNTED",
    "HealthEndpoint",
    "Observed",
    "PublishTiming",
    "Readiness",
    "TemplateCounters",
    "check_readiness",
    "unsubscribe_counted",
]

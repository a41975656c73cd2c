"""The cross-cutting themes every loader derives the same way, so "night-time economy" means one thing.

Suppliers say what they say (a weapon flag, a motive, an age band); each loader maps those onto the
``incidents.theme_*`` columns. One rule is the same for all timed suppliers and lives here: night-time
economy hours are the evening and the night, 18:00 to 05:59 London time (the GLA's night-time economy
covers 6 pm to 6 am), judged on the local clock; analysts pick Friday and Saturday nights with the
day-of-week filter. A record known only to the day or month cannot be placed, so its flag is NULL.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
NIGHT_TIME_ECONOMY_START_HOUR = 18
NIGHT_TIME_ECONOMY_END_HOUR = 6  # exclusive


def is_night_time_economy_hour(local_hour: int) -> bool:
    return local_hour >= NIGHT_TIME_ECONOMY_START_HOUR or local_hour < NIGHT_TIME_ECONOMY_END_HOUR


def night_time_economy(occurred_at: datetime | None, time_precision: str) -> bool | None:
    """TRUE/FALSE for a record timed to the minute (aware datetime), NULL (None) when the time is unknown."""
    if occurred_at is None or time_precision != "minute":
        return None
    return is_night_time_economy_hour(occurred_at.astimezone(LONDON).hour)

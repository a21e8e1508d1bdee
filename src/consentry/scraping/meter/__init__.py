"""The online meter: per-entity minute buckets, exact bounds of the rolling count, alerts.

Rules (docs/scraping.md):

1. Accesses are attributed like the assessment does (exact credential, then the longest
   prefix, within validity; unmapped credentials are their own entity).
2. Each entity keeps the posts of every bucket (one minute when the window is whole minutes,
   else one second) of the last `window / bucket + 1` buckets, up to its latest access t.
3. The rolling count at t is the posts in `(t - window, t]`. Buckets after the oldest are
   wholly inside it, the oldest only partly: lower bound = all buckets but the oldest,
   upper bound = all buckets. Both are exact bounds of the true count.
4. Alerts at 50 %, 80 % and 100 % of the threshold: a level is raised once when the upper
   bound reaches it (100 %: exceeds the threshold), `confirmed` when the lower bound does
   too; levels re-arm when the upper bound falls below 50 %.
5. An access older than the entity's oldest kept bucket is too late to count (`late`).
6. A bucket holds at most `bucket_cap` posts (it saturates there), so the bounds never
   overflow, even for the largest counts the API accepts.
   The meter counts what it is fed: feed each request once (it keeps no request ids).
   Alerts are warnings, never evidence: the assessment is the exact account.

Parts: the rule (`rule`: levels, bounds, the backend interface), attribution
(`attributor`), the backends `MemoryMeter` (`memory`, one process) and `RedisMeter`
(`redis_backend`, a Lua script, `add.lua`; every key of one
entity carries the hash tag `{entity}`, and a script call updates the entities of one
Redis Cluster slot, so it touches one slot). Both are fast kernels of rules 2-6; each is
held to the plain reading of those rules, one (entity, bucket) row at a time
(`_RowByRow` in tests/scraping/test_meter.py), by `test_vectorised_meter_equals_row_by_row`
and `test_redis_meter_equals_row_by_row` (levels and lower bounds exactly at 50 %, 80 %
and the threshold, instants at bucket and window edges).
"""

from consentry.scraping.meter.attributor import Attributor
from consentry.scraping.meter.memory import MemoryMeter
from consentry.scraping.meter.online import Meter, meter_for, replay
from consentry.scraping.meter.redis_backend import RedisMeter, hash_tags
from consentry.scraping.meter.rule import (
    ALERT_LEVELS,
    EXACT_TOTAL,
    Alert,
    BatchBounds,
    Bounds,
    MeterBackend,
    alert_levels,
    bucket_cap,
    reaches,
)

__all__ = [
    "ALERT_LEVELS",
    "EXACT_TOTAL",
    "Alert",
    "Attributor",
    "BatchBounds",
    "Bounds",
    "MemoryMeter",
    "Meter",
    "MeterBackend",
    "RedisMeter",
    "alert_levels",
    "bucket_cap",
    "hash_tags",
    "meter_for",
    "reaches",
    "replay",
]

"""What the broker holds for a queue: the ids of tasks waiting in it or delivered to a
worker and not yet acknowledged. A reconciler re-sends only chunks that are in neither
place, so a queued backlog is never duplicated.

This reads kombu's Redis layout: one list per queue and priority step (``queue``,
``queue\\x06\\x163``, ...), and the ``unacked`` hash of delivered messages, each stored
as JSON with its headers, where Celery puts the task ``id``.
"""

from __future__ import annotations

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel

# Server-side, so only ids cross the network: messages carry whole chunks of images.
# Lists are read in slices so the script never holds a long queue in memory at once.
_LIVE_IDS = """
local ids = {}
local function take(m)
  local id = string.match(m, '"id": "([^"]+)"')
  if id then ids[#ids + 1] = id end
end
for k = 1, #KEYS - 1 do
  local n = redis.call('LLEN', KEYS[k])
  for start = 0, n - 1, 200 do
    for _, m in ipairs(redis.call('LRANGE', KEYS[k], start, start + 199)) do take(m) end
  end
end
for _, m in ipairs(redis.call('HVALS', KEYS[#KEYS])) do take(m) end
return ids
"""


def queue_keys(queue: str) -> list[str]:
    """The Redis lists behind ``queue``, one per priority step, as kombu names them."""
    return [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]


def live_task_ids(client: redis.Redis, queue: str) -> set[str]:
    """Task ids queued on ``queue`` or delivered and unacknowledged (on any queue)."""
    ids = client.eval(_LIVE_IDS, len(queue_keys(queue)) + 1, *queue_keys(queue),
                      Channel.unacked_key)
    return {i.decode() if isinstance(i, bytes) else i for i in ids}


def queued(client: redis.Redis, queue: str) -> int:
    """Messages waiting on ``queue``."""
    with client.pipeline() as p:
        for key in queue_keys(queue):
            p.llen(key)
        return sum(p.execute())

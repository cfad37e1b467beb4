"""kombu's Redis transport, with a full Redis (maxmemory, noeviction) taken as a
connection problem rather than a fatal one.

When Redis is full, kombu can still pop a message (BRPOP frees memory) but not record it
as unacknowledged, and the error it gets is a ``ResponseError``: Celery treats that as
unrecoverable and the worker exits. As a connection error instead, the worker's consumer
reconnects with back-off and goes on once memory is freed; the message it popped is
pending in its job, and the reconciler re-sends it.
"""

from __future__ import annotations

from kombu.transport.redis import Transport as RedisTransport
from redis.exceptions import OutOfMemoryError


class Transport(RedisTransport):
    connection_errors = (*RedisTransport.connection_errors, OutOfMemoryError)

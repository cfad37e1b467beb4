"""kombu's Redis transport, with two failures taken as connection problems rather than
fatal ones.

When Redis is full, kombu can still pop a message (BRPOP frees memory) but not record it
as unacknowledged, and the error it gets is a ``ResponseError``: Celery treats that as
unrecoverable and the worker exits. As a connection error instead, the worker's consumer
reconnects with back-off and goes on once memory is freed; the message it popped is
pending in its job, and the reconciler re-sends it.

When Redis restarts, the consumer closes its connection to reconnect, and closing a
channel restores its unacknowledged messages through a fresh client. If the channel's
transport has already been detached from its connection, kombu fails to build that client
with an ``AttributeError`` that Celery does not ignore, and the worker exits (seen once
in three runs of ``tests/test_faults.py``'s Redis restart with AOF). That is a connection
that is gone, and is raised as one: the close goes on, and the messages stay in Redis's
unacknowledged index, which the restore sweep (``unacked_restore_interval``) hands back.
"""

from __future__ import annotations

from kombu.transport.redis import Channel as RedisChannel
from kombu.transport.redis import Transport as RedisTransport
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError


class Channel(RedisChannel):
    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(RedisTransport):
    Channel = Channel
    connection_errors = (*RedisTransport.connection_errors, OutOfMemoryError)

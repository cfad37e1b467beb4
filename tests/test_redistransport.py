"""The worker's kombu transport: failures that are connection problems stay connection
problems, which Celery's consumer rides out, instead of ending the worker."""

import pytest
import redis
from kombu import Connection
from kombu.transport.redis import Transport as KombuTransport

from digitscan.worker.redistransport import Transport


@pytest.mark.parametrize("transport", [Transport, KombuTransport], ids=["ours", "kombu"])
def test_closing_a_channel_whose_transport_is_detached(redis_url, transport):
    """The state a Redis restart once left the consumer in: closing its channel, with a
    message delivered and not acknowledged, after the transport lost its connection."""
    client = redis.Redis.from_url(redis_url)
    client.delete("unacked", "unacked_index", "detached-test")  # the session's server
    conn = Connection(redis_url, transport=transport)
    queue = conn.SimpleQueue("detached-test")
    queue.put({"chunk": 1})
    queue.get(timeout=5)  # delivered, not acknowledged
    channel = conn.default_channel
    channel._pool = None  # as _disconnect_pools leaves it
    channel.connection.client = None  # the transport detached from its connection
    if transport is KombuTransport:  # the test of the test: kombu's own crashes the worker
        with pytest.raises(AttributeError, match="hostname"):
            conn.maybe_close_channel(channel)
        return
    conn.maybe_close_channel(channel)  # a connection error, which close ignores
    assert channel.closed
    # The message is not lost: it waits in the unacknowledged index for the restore sweep.
    assert client.hlen("unacked") == 1

"""Celery settings, derived from ``Settings``. Safe defaults for at-least-once delivery."""

from __future__ import annotations

from kombu.serialization import register

from digitscan.worker import messages
from digitscan.worker.settings import Settings

TASK_NAME = "digitscan.classify_chunk"

register(messages.SERIALIZER, messages.pack, messages.unpack,
         content_type=messages.CONTENT_TYPE, content_encoding="binary")


def celery_config(settings: Settings) -> dict:
    tls = {}
    if settings.tls_options(settings.broker_url):
        tls["broker_use_ssl"] = settings.tls_options(settings.broker_url)
    if settings.tls_options(settings.results_url):
        tls["redis_backend_use_ssl"] = settings.tls_options(settings.results_url)
    return {
        **tls,
        "broker_url": settings.broker_url,
        # A full Redis makes the consumer reconnect, not the worker exit (redistransport.py).
        "broker_transport": "digitscan.worker.redistransport:Transport",
        "result_backend": settings.results_url,
        # msgpack carries a chunk's images as bytes: no base64 of each image, and no JSON
        # escaping of it on either side (a 256-cell chunk cost the client 94 us a cell to
        # publish as JSON, 57 as msgpack; the worker 29 and 20 to read). JSON is still
        # accepted: chunks queued by a client of the version before. Neither runs code: a
        # pickle message is refused, never executed.
        "task_serializer": messages.SERIALIZER,
        "result_serializer": "json",
        "accept_content": [messages.CONTENT_TYPE, "json"],
        "result_accept_content": ["json"],
        # Ack after the chunk's results are stored; requeue if the worker dies mid-chunk.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A chunk past its time limit goes back to the queue. Any other failure drops the
        # message; the reconciler re-sends the chunk from its pending copy (at most
        # max_requeues times, then its images get error results).
        "task_acks_on_timeout": False,
        "worker_prefetch_multiplier": 1,
        # DIGITSCAN_CONCURRENCY is also what sizes each process's onnxruntime threads, so a
        # plain `celery -A digitscan.worker.app worker` uses it too (0: Celery's default, the cores).
        **({"worker_concurrency": settings.concurrency} if settings.concurrency else {}),
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1, settings.task_time_limit - 10),
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for chunks of dead workers every few seconds, not kombu's default of
            # every ~100 s: a chunk comes back soon after its visibility timeout expires.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 6)),
            "unacked_restore_throttle": 1,
            # kombu's Redis transport keeps each message in a JSON envelope, so the binary
            # msgpack body travels in base64 (kombu's default body encoding): Redis holds
            # 1.33x the image bytes, and the images are base64-encoded once, in C. (Each
            # message says how its body is encoded: JSON ones of the version before, stored
            # as UTF-8 text, still read.)
            "body_encoding": "base64",
        },
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_expires": settings.result_ttl,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "task_ignore_result": True,  # results are written per image by the task itself
        # For Flower and `celery events`; off where no one can watch (Settings.task_events).
        "worker_send_task_events": bool(settings.task_events),
        "task_send_sent_event": bool(settings.task_events),
        "worker_hijack_root_logger": False,
    }

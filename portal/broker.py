"""The Redis transport the workers use: kombu's, with one fix so that a worker survives losing Redis.

The crash (celery 5.7.0 with kombu 5.7.0, the solo and the prefork pool): when the connection to Redis
breaks while the worker holds unacknowledged messages — a task running with ``acks_late``, a message
prefetched, an eta message waiting — the consumer handles the error in two steps.
``Connection.collect()`` closes the channel; that close fails on the dead socket (``_brpop_read``)
*before* the channel marks itself closed, and ``collect()`` then detaches the transport from the
connection (``transport.client = None``). Next, celery 5.7 closes the connection again
(``on_connection_error_after_connected``; 5.6.3 did not), which closes the same channel a second time:
now it logs "Restoring N unacknowledged message(s)" and builds a Redis client from the detached
transport, and ``_connparams`` raises ``AttributeError: 'NoneType' object has no attribute
'hostname'``. That is not a connection error, so the worker stops for good ("Unrecoverable error",
exit code 1) instead of reconnecting. A task that finishes during the outage meets the same
``AttributeError`` later, when its acknowledgement runs on the old channel (``'NoneType' object has no
attribute 'client'``), and stops the worker after it has reconnected.

The fix: a channel whose transport is gone raises the transport's own connection error when it is asked
for a Redis client — which is what it is: there is no connection. Every caller already treats that as
recoverable: the second close gives up restoring (the messages stay in Redis's unacked hash, if Redis
kept its data, and come back after ``visibility_timeout``, as for a worker that died), a late
acknowledgement is logged as "Couldn't ack" (the message is delivered again later; every task is
idempotent), and the consumer reconnects by itself. Proven with real processes by
``tests/ops/test_fault_injection.py`` (a prefork worker holding work when Redis goes away); without this
class that worker exits with the AttributeError above.
"""

from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("This channel's connection to Redis was closed after it broke.")
        return super()._connparams(asynchronous=asynchronous)


class Transport(redis.Transport):
    Channel = Channel

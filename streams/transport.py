"""A Faust Kafka transport whose consumer does not sit on idle fetches.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``. A broker that answers a fetch only
when that wait expires, rather than as soon as new data arrives (the embedded Tansu broker does
this), then adds up to 1.5 s to every trade → halt path: measured publish→receive p50 373 ms at
1500 ms versus 3 ms at 100 ms. Real Kafka returns early either way, so a short wait costs only a
few more empty fetch requests while idle.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver

__all__ = ["FETCH_MAX_WAIT_MS", "SurveilApp"]

FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by the fetcher at start()
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class SurveilApp(faust.App):
    """``faust.App`` with the low-latency consumer (everything else unchanged)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

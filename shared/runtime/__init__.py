"""The service runtime every service is built on: batched consumption on aiokafka.

A service shell declares what it does on a ``Service`` (service.py): a handler per source
topic (``svc.on``), timers (``svc.every``), background tasks, shutdown hooks and
changelog-backed stores. The runtime runs it, one object per concern:

- ``context.Context``: what a handler sees (settings, log, metrics, the record in hand,
  ``send`` that rides on the batch, ``dead_letter``); ``context.Publisher`` sends at once,
  for tasks and timers, which have no batch to ride on;
- ``dispatch.Dispatcher``: one record to its handler: decode, event_id, dead letter on error;
- ``loop.BatchLoop``: fetch, skip poison batches, hand each batch to the dispatcher;
- ``checkpoint.Checkpointer``: the outbox, the changelog records, delivery and the commit
  cadence (nothing is committed before its output is on the broker: at-least-once);
- ``recovery.Recovery``: rebalances and changelog replay;
- ``deadletters.DeadLetters``: the dead-letter records and their metrics and logs;
- ``runner``: the Kafka clients, signals, tasks and timers, around all of the above;
- ``testing.Harness``: a service's handlers in-process, with no broker, for unit tests.

Why not Faust's consumer: see the README's "Service runtime" section.
"""

from driftloop.shared.runtime.context import Context, Publisher, Sender
from driftloop.shared.runtime.runner import run_service
from driftloop.shared.runtime.service import Service

__all__ = ["Context", "Publisher", "Sender", "Service", "run_service"]

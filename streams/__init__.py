"""Kafka side of the pipeline: topics, message contracts, the engine, the worker loops, the store.

Where a trade enters: :func:`streams.contracts.decode_message` (bytes from the ``trades`` topic)
and :mod:`replay.tape` (tape files). Where it is judged: :class:`streams.pipeline.Surveillance`
(event-time rules in :mod:`streams.partition`). Where a halt leaves: :mod:`streams.worker`
(topic ``halts``, confirmed before the input offset is committed). Stage 2 (venue-wide):
:mod:`streams.venue`.
"""

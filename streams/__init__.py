"""Kafka side of the pipeline: topics, message contracts, the Faust app factory and the store.

Where a trade enters: :func:`streams.contracts.decode_message` (bytes from the ``trades`` topic)
and :mod:`replay.tape` (tape files). Where it is judged: :mod:`detectors.engine`. Where a halt
leaves: :func:`streams.app.create_app` (topic ``halts``).
"""

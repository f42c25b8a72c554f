"""The ``surveil`` command line and the orchestration behind it (up, bench, replay, feed)."""

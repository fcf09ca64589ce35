"""The demo's batch waits for the worker to catch up, reading the lag it exports."""

from __future__ import annotations

from appfirst.demo.batch import records_behind

METRICS = """# HELP appfirst_consumer_lag Records not yet committed
# TYPE appfirst_consumer_lag gauge
appfirst_consumer_lag{partition="0",topic="send-requests"} 3.0
appfirst_consumer_lag{partition="3",topic="dispatches"} 120.0
appfirst_committed_offset{partition="3",topic="dispatches"} 9000.0
"""


def test_the_lag_read_is_the_sum_over_partitions_and_nothing_else() -> None:
    assert records_behind(METRICS) == 123

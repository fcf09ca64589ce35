"""The benchmark's own parts (``make bench`` itself measures; nothing here is timed)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from appfirst.codecs import Decoder
from appfirst.topics.models import DeliveryReceipt, Dispatch, SendRequest
from bench.__main__ import table
from bench.loads import Traffic, recorded_day

NOON = datetime(2026, 11, 22, 12, tzinfo=UTC)


def test_traffic_is_valid_events_every_message_once() -> None:
    traffic = Traffic(300).build()
    requests = [Decoder(SendRequest).decode(v) for _, v, _ in traffic.topics["send-requests"]]
    assert len({r.message_id for r in requests}) == 300
    receipts = traffic.topics["delivery-receipts"]
    assert all(Decoder(DeliveryReceipt).decode(v) for _, v, _ in receipts)
    assert traffic.external_events == sum(len(v) for v in traffic.topics.values())
    assert Traffic(300, start=NOON).build().topics == Traffic(300, start=NOON).build().topics


def test_a_recorded_day_is_in_time_order_per_topic() -> None:
    day = recorded_day(500, datetime(2026, 11, 22, tzinfo=UTC))
    times = [Decoder(Dispatch).decode(v).dispatched_at for _, v, _ in day["dispatches"]]
    assert times == sorted(times) and len(times) == 500
    assert times[-1] - times[0] > (times[1] - times[0]) * 400  # spread over the day


def test_the_table_says_met_or_missed_against_each_target() -> None:
    results = {
        "pipeline": {"messages_per_second": 300, "events_per_second": 700},
        "bare": {"events_per_second": 1000},
        "hops": {"events_per_second": 250},
        "scaleout": {"events_per_second": 900},
        "deadlines": {
            "pending": 10,
            "lateness_p50_seconds": 0.1,
            "lateness_p99_seconds": 0.3,
            "lateness_max_seconds": 0.4,
            "early_fallbacks": 0,
            "rss_bytes_per_pending": 900,
            "ingest_per_second": 5,
        },
    }
    console = Console(width=200, record=True)
    console.print(table(results))
    text = console.export_text()
    assert "pipeline / bare" in text and "0.70" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "met" in lines["pipeline / bare"]
    assert "250, 0.25" in lines["plain Faust over the pipeline's hops, no work: events/s, / bare"]
    assert "2.80" in lines["pipeline / plain Faust over the same hops"]
    assert "missed" in lines["RSS per pending deadline"]
    assert "missed" in lines["scale-out: 2 workers / 1"]
    assert "met" in lines["early fallbacks"]


def test_the_table_shows_memory_flat_when_rows_end() -> None:
    results = {
        "retention": {
            "rounds": 4,
            "messages_per_round": 1000,
            "keep_seconds": 5.0,
            "rows_after_fallbacks": [3000, 2990, 3000, 2980],
            "rss_bytes_after_round": [100 * 2**20, 104 * 2**20, 104 * 2**20, 105 * 2**20],
            "rss_growth_second_half_bytes_per_message": 524.0,
        }
    }
    console = Console(width=200, record=True)
    console.print(table(results))
    text = console.export_text()
    assert "RSS after each round (MB): 100 104 104 105" in text
    assert "peak 3,000, then 0" in text
    growth = next(line for line in text.splitlines() if "growth in the second half" in line)
    assert "524 B per message" in growth and "missed" in growth

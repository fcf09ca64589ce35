"""``make bench``: every measurement of the performance issue, one table, one JSON file.

    python -m bench [--messages N] [--pending N] [--quick]

Figures on a shared 2-core machine are noisy: each target is a ratio measured in one run
or a bound with a wide margin. Results go to ``bench/results/<UTC time>.json`` and
``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appfirst.broker import EmbeddedBroker

from . import scenarios, sending
from .loads import NHS_APP_SHARE, Traffic

RESULTS = Path(__file__).parent / "results"
NATIONAL_DAY_NHS_APP = 3_400_000


MEASUREMENTS = (
    "idle",
    "sends",
    "outage",
    "pipeline",
    "routing",
    "latency",
    "deadlines",
    "retention",
    "scaleout",
    "replay",
)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--messages", type=int, default=20_000, help="pipeline and scale-out load")
    # 200,000: a national worker holds hundreds of thousands (docs/performance.md), and
    # below that the fixed cost of taking in any load outweighs the cost per deadline.
    p.add_argument("--pending", type=int, default=200_000, help="deadlines waiting")
    # 20: the first ten are the worker's warm-up (RocksDB's budget and the arenas filling,
    # measured over 40 on 2026-12-07), so the second half is past it.
    p.add_argument("--rounds", type=int, default=20, help="retention rounds (memory over time)")
    p.add_argument("--due", type=int, default=2_000, help="fallbacks measured for lateness")
    p.add_argument("--rate", type=float, default=2_000, help="routing latency offered load /s")
    p.add_argument("--rate-seconds", type=float, default=5)
    p.add_argument("--replay-sample", type=int, default=10_000, help="messages of the day")
    p.add_argument("--quick", action="store_true", help="a tenth of every size (smoke run)")
    p.add_argument("--sends", type=int, default=400, help="SMS per send-throughput run")
    p.add_argument("--only", nargs="*", default=None, help="run only these measurements")
    return p.parse_args()


async def _run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    scale = 0.1 if args.quick else 1.0
    messages = max(500, int(args.messages * scale))
    workdir = Path(tempfile.mkdtemp(prefix="appfirst-bench-"))
    console.print(f"[bold]appfirst bench[/] logs in {workdir}")
    results: dict[str, Any] = {}
    wanted = set(args.only or MEASUREMENTS)
    with EmbeddedBroker() as broker:
        traffic = Traffic(messages).build()
        if "idle" in wanted:
            console.print("idle: a worker of every part, ready, with nothing to do for 20 s")
            results["idle"] = await scenarios.idle(broker.url, workdir)
            console.print(f"  {results['idle']['share_of_a_core']:.1%} of a core")
        if "sends" in wanted:
            count = max(100, int(args.sends * scale))
            results["sends"] = []
            for latency in (0.0, 0.05, 0.1, 0.3):
                console.print(f"sends: {count:,} SMS, {count // 2:,} NHS App, {latency:g} s a call")
                run = await sending.throughput(broker.url, workdir, latency, count)
                results["sends"].append(run)
                sms_rate, app_rate = run["sms_per_second"], run["nhs_app_per_second"]
                console.print(f"  SMS {sms_rate:.1f}/s, NHS App {app_rate:.1f}/s")
        if "outage" in wanted:
            console.print("outage: the NHS App answers 503 for 90 s")
            results["outage"] = await sending.outage(
                broker.url, workdir, max(20, int(100 * scale)), 90.0, 20.0
            )
        if "pipeline" in wanted or "scaleout" in wanted:
            console.print(f"pipeline: {messages:,} messages ({traffic.external_events:,} events)")
            results["pipeline"] = await scenarios.pipeline(broker.url, workdir, traffic)
            console.print(f"  {results['pipeline']['events_per_second']:,.0f} events/s")
            results["bare"] = await scenarios.bare(broker.url, workdir, traffic)
            console.print(f"  bare Faust: {results['bare']['events_per_second']:,.0f} events/s")
            results["hops"] = await scenarios.hops(broker.url, workdir, traffic)
            console.print(
                f"  Faust over the same hops: {results['hops']['events_per_second']:,.0f} events/s"
            )
        if "routing" in wanted:
            console.print(f"routing only: {messages:,} requests, appfirst and plain Faust, 3 each")
            results["routing"] = await scenarios.routing(broker.url, workdir, traffic)
            r = results["routing"]
            console.print(
                f"  appfirst {r['appfirst_per_second']:,.0f}/s, "
                f"plain Faust {r['plain_per_second']:,.0f}/s (medians of 3)"
            )
        if "scaleout" in wanted:
            console.print("scale-out: two workers on the same load")
            results["scaleout"] = await scenarios.pipeline(broker.url, workdir, traffic, workers=2)
        if "latency" in wanted:
            console.print(f"routing latency at {args.rate:,.0f} messages/s")
            results["latency"] = await scenarios.routing_latency(
                broker.url, workdir, args.rate, args.rate_seconds * scale
            )
        if "deadlines" in wanted:
            pending = max(1000, int(args.pending * scale))
            console.print(f"deadlines: {pending:,} pending, {args.due:,} falling due")
            results["deadlines"] = await scenarios.deadlines(
                broker.url, workdir, pending, args.due, (20.0, 50.0)
            )
        if "retention" in wanted:
            per_round = max(500, int(3000 * scale))
            rounds = args.rounds
            console.print(f"retention: {rounds} rounds of {per_round:,} messages, rows kept 5 s")
            results["retention"] = await scenarios.retention(broker.url, workdir, rounds, per_round)
        if "replay" in wanted:
            sample = max(1000, int(args.replay_sample * scale))
            day = int(NATIONAL_DAY_NHS_APP / NHS_APP_SHARE)
            console.print(f"replay: {sample:,} messages of a national day of {day:,}")
            results["replay"] = await scenarios.replay(broker.url, workdir, sample, day)
    return results


def table(results: dict[str, Any]) -> Table:
    t = Table(title="appfirst bench", title_justify="left")
    t.add_column("measurement")
    t.add_column("result", justify="right")
    t.add_column("target", justify="right")
    t.add_column("", justify="center")

    def row(name: str, value: str, target: str, ok: bool | None) -> None:
        t.add_row(name, value, target, "-" if ok is None else ("met" if ok else "[red]missed[/]"))

    if i := results.get("idle"):
        share = i["share_of_a_core"]
        row("idle worker, every part: CPU share of a core", f"{share:.1%}", "<= 5%", share <= 0.05)
    for run in results.get("sends", []):
        ms = f"{run['latency_seconds'] * 1000:.0f} ms"
        row(
            f"SMS sent /s, one worker, {ms} a call",
            f"{run['sms_per_second']:.1f}",
            ">= 45",
            run["sms_per_second"] >= 45,
        )
        row(
            f"NHS App sent /s, one worker, {ms} a call",
            f"{run['nhs_app_per_second']:.1f}",
            ">= 18",
            run["nhs_app_per_second"] >= 18,
        )
        row(
            f"  repeated or missing sends ({ms})",
            str(run["repeats"] + run["missing"]),
            "0",
            run["repeats"] + run["missing"] == 0,
        )
    if o := results.get("outage"):
        row(
            f"NHS App down {o['outage_seconds']:.0f} s: SMS-only sent within 30 s",
            f"{o['sms_sent_within_30s']} of {o['messages']}",
            "all",
            o["sms_sent_within_30s"] == o["messages"],
        )
        late = o["fallback_late_after_give_up_max_seconds"]
        row(
            f"  fallback SMS after dispatch, p50 / max (give-up {o['give_up_seconds']:.0f} s)",
            f"{o['fallback_after_dispatch_p50_seconds'] or 0:.1f} / "
            f"{o['fallback_after_dispatch_max_seconds'] or 0:.1f} s",
            "max <= give-up + 5 s",
            late is not None and late <= 5 and o["fallbacks_sent"] == o["messages"],
        )
    p, b = results.get("pipeline"), results.get("bare")
    if p and b:
        ratio = p["events_per_second"] / b["events_per_second"]
        row("pipeline messages/s", f"{p['messages_per_second']:,.0f}", "", None)
        row("pipeline events/s", f"{p['events_per_second']:,.0f}", "", None)
        if "internal_records_per_event" in p:
            per_event = p["internal_records_per_event"]
            row("records the worker wrote per event", f"{per_event:.1f}", "<= 2.0", per_event <= 2)
        row("bare Faust events/s (decode only)", f"{b['events_per_second']:,.0f}", "", None)
        row("pipeline / bare", f"{ratio:.2f}", ">= 0.3", ratio >= 0.3)
        if h := results.get("hops"):
            ceiling = h["events_per_second"] / b["events_per_second"]
            row(
                "plain Faust over the pipeline's hops, no work: events/s, / bare",
                f"{h['events_per_second']:,.0f}, {ceiling:.2f}",
                "",
                None,
            )
            floor = p["events_per_second"] / h["events_per_second"]
            row("pipeline / plain Faust over the same hops", f"{floor:.2f}", "", None)
    if r := results.get("routing"):
        row(
            f"routing only ({r['messages']:,}): appfirst / plain Faust, medians",
            f"{r['appfirst_per_second']:,.0f} / {r['plain_per_second']:,.0f} /s = {r['ratio']:.2f}",
            ">= 1.0",
            r["ratio"] >= 1.0,
        )
    if lat := results.get("latency"):
        row(
            f"routing p50 / p99 at {lat['offered_per_second']:,.0f}/s",
            f"{lat['p50_seconds'] * 1000:,.0f} / {lat['p99_seconds'] * 1000:,.0f} ms",
            "p99 <= 50 ms",
            lat["p99_seconds"] <= 0.05,
        )
    if d := results.get("deadlines"):
        row(
            f"fallback lateness p50 / p99 / max ({d['pending']:,} pending)",
            f"{d['lateness_p50_seconds']:.2f} / {d['lateness_p99_seconds']:.2f} / "
            f"{d['lateness_max_seconds']:.2f} s",
            "p99 <= 1 s",
            d["lateness_p99_seconds"] <= 1,
        )
        row("early fallbacks", str(d["early_fallbacks"]), "0", d["early_fallbacks"] == 0)
        row(
            "RSS per pending deadline",
            f"{d['rss_bytes_per_pending']:,.0f} B",
            "<= 500 B",
            d["rss_bytes_per_pending"] <= 500,
        )
        if "rss_bytes_per_pending_second_half" in d:
            row(
                "RSS per pending deadline, the second half only (what one more costs)",
                f"{d['rss_bytes_per_pending_second_half']:,.0f} B",
                "",
                None,
            )
        row("deadline intake", f"{d['ingest_per_second']:,.0f}/s", "", None)
    if ret := results.get("retention"):
        mb = [f"{b / 2**20:.0f}" for b in ret["rss_bytes_after_round"]]
        row(
            f"rows held after each of {ret['rounds']} rounds of "
            f"{ret['messages_per_round']:,} (kept {ret['keep_seconds']:.0f} s)",
            f"peak {max(ret['rows_after_fallbacks']):,}, then 0",
            "0",
            True,  # the run waits for none to be left, and fails if they are not
        )
        growth = ret["rss_growth_second_half_bytes_per_message"]
        row(
            f"RSS after each round (MB): {' '.join(mb)}; growth in the second half",
            f"{growth:,.0f} B per message",
            "<= 100 B",
            growth <= 100,
        )
    if (s := results.get("scaleout")) and p:
        ratio = s["events_per_second"] / p["events_per_second"]
        row("scale-out: 2 workers / 1", f"{ratio:.2f}", ">= 1.5", ratio >= 1.5)
    if r := results.get("replay"):
        row("replay events/s", f"{r['events_per_second']:,.0f}", "", None)
        row(
            f"national day ({r['day_messages']:,} messages), projected",
            f"{r['projected_day_seconds'] / 60:,.0f} min ({r['times_real_time']:.1f}x real time)",
            "< 60 min",
            r["projected_day_seconds"] < 3600,
        )
    return t


def main() -> None:
    args = _args()
    console = Console()
    started = time.perf_counter()
    results = asyncio.run(_run(args, console))
    results["meta"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "cpus": os.cpu_count(),
        "args": vars(args),
    }
    console.print(table(results))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for path in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"results: {RESULTS / 'latest.json'} ({results['meta']['seconds']:.0f} s)")


if __name__ == "__main__":
    main()

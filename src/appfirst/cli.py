"""The ``appfirst`` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """appfirst: NHS App first, SMS as the safety net."""
    # The demo's console is for people (its processes log JSON to their files); every
    # other command logs JSON lines to stderr. Read from the environment, not Settings, so
    # that `appfirst broker` runs whatever else is set.
    if ctx.invoked_subcommand != "demo":
        from appfirst.logs import configure

        configure(os.environ.get("APPFIRST_LOG_LEVEL", "info"))


@main.command()
@click.option("--port", type=int, default=None, help="Port to listen on (default: a free one).")
def broker(port: int | None) -> None:
    """Run the embedded Kafka-compatible broker in the foreground."""
    from appfirst.broker import EmbeddedBroker

    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with EmbeddedBroker(port) as running:
        click.echo(f"broker listening: {running.url}")
        click.echo(f"export APPFIRST_BROKER={running.url}")
        while not stop["now"] and running.process and running.process.poll() is None:
            _sleep()
    click.echo("broker stopped")


def _sleep() -> None:
    import time

    time.sleep(0.2)


@main.command()
def topics() -> None:
    """Create every catalogue topic that does not exist yet on APPFIRST_BROKER."""
    from appfirst.admin import PartitionMismatch, ensure_topics
    from appfirst.settings import get_settings

    try:
        created = asyncio.run(ensure_topics(get_settings()))
    except PartitionMismatch as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))


@main.command()
def worker() -> None:
    """Run the stream processor against APPFIRST_BROKER."""
    if not os.environ.get("APPFIRST_BROKER"):
        raise click.UsageError("set APPFIRST_BROKER (e.g. kafka://127.0.0.1:9092)")
    sys.argv = [sys.argv[0], "worker"]  # Faust's own command line must not see ours
    from appfirst.admin import PartitionMismatch
    from appfirst.streams.worker import run

    try:
        run()
    except PartitionMismatch as exc:  # before Faust starts: nothing to stop
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8900, show_default=True)
@click.option(
    "--callback-url",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="Base URL of the worker's callback endpoints.",
)
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(exists=True),
    default=None,
    help="Patient behaviour as JSON (see providers/scenario.py).",
)
def simulator(host: str, port: int, callback_url: str, scenario_path: str | None) -> None:
    """Run the provider simulator (NHS App, SMS and email) on loopback."""
    from appfirst.providers.scenario import Scenario
    from appfirst.providers.simulator import Credentials, Simulator, serve
    from appfirst.settings import get_settings

    # It trusts the keys this environment's workers use, as the real services would
    # after onboarding: the NHS App key pair, the Notify API key, the callback tokens.
    sim = Simulator(
        Scenario.load(scenario_path),
        callback_url.rstrip("/"),
        Credentials.from_settings(get_settings()),
    )

    async def _run() -> None:
        runner = await serve(sim, host, port)
        url = f"http://{host}:{port}"
        # A log line, like everything else this service writes (JSON, see appfirst/logs.py).
        logging.getLogger("appfirst.simulator").info("simulator listening: %s", url)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await runner.cleanup()

    asyncio.run(_run())


@main.command("eligibility-sync")
@click.argument("ods_codes", nargs=-1)
def eligibility_sync(ods_codes: tuple[str, ...]) -> None:
    """Copy the NHS App patients report of each practice (ODS code) into `eligibility`.

    With no ODS codes: every practice whose settings turn the NHS App route on.
    """
    from appfirst.jobs.eligibility_sync import nhs_app_practices, sync
    from appfirst.settings import get_settings

    settings = get_settings()

    async def _run() -> tuple[list[str], Any]:
        codes = list(ods_codes) or await nhs_app_practices(settings)
        return codes, await sync(settings, codes)

    codes, result = asyncio.run(_run())
    if not codes:
        click.echo("no practice has the NHS App route on: nothing to sync")
        return
    click.echo(
        f"{result.practices} practices: {result.patients} NHS App users, "
        f"{result.notifications_enabled} with notifications on"
    )


@main.command()
@click.option(
    "--day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The report day (UTC), YYYY-MM-DD; default yesterday.",
)
def reconcile(day: datetime | None) -> None:
    """Fill in NHS App receipts whose real-time callback never came, from the daily report."""
    from appfirst.jobs.reconcile import reconcile as run_reconcile
    from appfirst.settings import get_settings

    when = day.date() if day else (datetime.now(UTC) - timedelta(days=1)).date()
    result = asyncio.run(run_reconcile(get_settings(), when))
    filled = ", ".join(f"{k} {v}" for k, v in sorted(result.filled.items())) or "none"
    click.echo(
        f"{when}: {result.in_report} receipts in the report, {result.already_had} already "
        f"received, filled in: {filled}"
    )


@main.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="pilot-report.html",
    show_default=True,
    help="Where to write the HTML file.",
)
def report(out: str) -> None:
    """Render the pilot report (one self-contained HTML file) from Kafka."""
    from pathlib import Path

    from appfirst.report import gather, render
    from appfirst.settings import get_settings

    settings = get_settings()
    data = asyncio.run(gather(settings))
    page = render(
        data,
        price_per_fragment=settings.sms_fragment_price,
        deadline_seconds=settings.fallback_individual_seconds,
    )
    Path(out).write_text(page, encoding="utf-8")
    click.echo(f"report written: {out}")


@main.command()
@click.option(
    "--messages",
    type=int,
    default=3_000,
    show_default=True,
    help="Send requests in all: 3,000 in 45 s leaves one worker on 2 cores room to keep up.",
)
@click.option(
    "--seconds",
    type=float,
    default=45.0,
    show_default=True,
    help="How long traffic is sent for; the run ends about 75 s later.",
)
@click.option(
    "--drain",
    type=float,
    default=75.0,
    show_default=True,
    help="Seconds to keep watching after the last request (deadlines, metrics).",
)
@click.option("--seed", type=int, default=2025, show_default=True)
def demo(messages: int, seconds: float, drain: float, seed: int) -> None:
    """Run broker, worker, simulator and traffic together, then print a summary."""
    from appfirst.demo.run import run_demo

    sys.exit(run_demo(messages=messages, seconds=seconds, drain=drain, seed=seed))


@main.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="Where to write the document; - is standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    default=None,
    help="Default: yaml if --out ends in .yaml or .yml, else json. YAML needs PyYAML.",
)
def asyncapi(out: str, fmt: str | None) -> None:
    """Write the AsyncAPI 3.0 document of every topic (APPFIRST_TOPIC_PREFIX applies)."""
    from importlib.util import find_spec
    from pathlib import Path

    from appfirst.settings import get_settings
    from appfirst.topics.asyncapi import document_for, render

    if fmt is None:
        fmt = "yaml" if out.endswith((".yaml", ".yml")) else "json"
    if fmt == "yaml" and find_spec("yaml") is None:
        raise click.UsageError("--format yaml needs PyYAML, which is not installed: use json")
    text = render(document_for(get_settings()), "yaml" if fmt == "yaml" else "json")
    if out == "-":
        click.echo(text, nl=False)
    else:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"AsyncAPI document written: {out}")


def _add_batch() -> None:
    from appfirst.batch_cli import batch

    main.add_command(batch)


_add_batch()

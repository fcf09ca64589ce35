"""``create_app`` (``streams/worker.py``): a worker's app is made from a ``Settings`` and
nothing else; importing the package builds nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

from appfirst.codecs import rowbatch
from appfirst.settings import settings_from_env
from appfirst.streams.worker import ROLES, create_app


def test_importing_the_streams_package_reads_no_settings_and_builds_no_app() -> None:
    # In a process of its own: this one has imported the package already.
    code = textwrap.dedent(
        """
        import importlib, pkgutil
        import faust
        import appfirst.settings

        def refuse(*args, **kwargs):
            raise AssertionError("built at import")

        appfirst.settings.get_settings = refuse
        appfirst.settings.Settings.__init__ = refuse
        faust.App.__init__ = refuse
        import appfirst.streams
        for module in pkgutil.iter_modules(appfirst.streams.__path__):
            importlib.import_module(f"appfirst.streams.{module.name}")
        import sys
        print("imported", len(list(pkgutil.iter_modules(appfirst.streams.__path__))))
        print("scipy", "scipy" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported, scipy = done.stdout.splitlines()
    assert int(imported.split()[1]) >= 20
    # scipy.stats took longer to import than the rest of a worker, at every start; the
    # comparison imports it when it first needs it (rules/stats.py).
    assert scipy == "scipy False"


def _agents(role: str) -> set[str]:
    built = create_app(settings_from_env({"APPFIRST_ROLE": role}))
    return {name.rsplit(".", 2)[-2] for name in built.app.agents}


def test_each_role_builds_its_own_parts() -> None:
    assert _agents("dispatcher") == {"dispatcher"}
    streams = _agents("streams")
    assert "dispatcher" not in streams
    # The fallback engine is a part of the per-message agent (messages), not an agent.
    assert {"router", "messages", "metrics", "batches"} <= streams
    assert _agents("all") == streams | {"dispatcher"}
    for role, parts in ROLES.items():
        built = create_app(settings_from_env({"APPFIRST_ROLE": role}))
        assert set(parts) <= set(built.parts), role
    built = create_app(settings_from_env({"APPFIRST_ROLE": "streams"}))
    assert built.part("tracker") is built.parts["messages"].tracker


def test_two_apps_in_one_process_share_no_state() -> None:
    one = create_app(settings_from_env({"APPFIRST_TOPIC_PREFIX": "one."}), ["tracker"])
    two = create_app(settings_from_env({"APPFIRST_TOPIC_PREFIX": "two."}), ["tracker"])
    assert one.app is not two.app
    assert one.app.conf.id == "one.worker"
    assert one.parts["tracker"] is not two.parts["tracker"]
    topics = {t.get_topic_name() for t in [one.context.topics.dispatches]}
    assert topics == {"one.dispatches"}
    assert two.context.topics.dispatches.get_topic_name() == "two.dispatches"
    # A table of one is not a table of the other (each worker recovers its own).
    assert set(one.app.tables) == set(two.app.tables)
    assert all(one.app.tables[n] is not two.app.tables[n] for n in one.app.tables)


def test_readiness_waits_for_the_tables_routing_needs_in_each_role() -> None:
    # What /readyz waits for besides the group, recovery and the broker (streams/health.py).
    for role, waited in (
        ("all", {"practice-settings", "failed-numbers"}),
        ("streams", {"practice-settings", "failed-numbers"}),
        ("dispatcher", set()),
    ):
        built = create_app(settings_from_env({"APPFIRST_ROLE": role}))
        loading = built.context.loading
        assert {t.topic.removeprefix("appfirst.") for t in loading} == waited, role
        health = built.parts["health"]
        assert health._broadcast_tables_loaded() is not bool(waited), role
        for table in loading:
            table.ready.set()
        assert health._broadcast_tables_loaded(), role


def test_the_per_message_changelogs_are_made_for_the_cleaner() -> None:
    # Their batches are tombstoned by copies (streams/rowlog.py); the cleaner removes them
    # only from closed segments, so the segments must close within hours, not a week.
    built = create_app(settings_from_env({}))
    tables = built.app.tables
    for name in ("message-rows", "routed", "sends"):
        assert tables[name].changelog_topic.config == {"segment.ms": "3600000"}, name
    assert not tables["arm-stats"].changelog_topic.config


def test_a_rows_store_reads_its_changelog_as_its_table_does() -> None:
    # Faust's table asks its store to apply changelog records; a store of rows answers as
    # its table does, a batch of rows a record (streams/rowlog.py).
    built = create_app(settings_from_env({"APPFIRST_ROW_STORE": "memory"}))
    table = built.app.tables["routed"]
    [(value, _)] = list(rowbatch.encode([("m-1", b'{"a":1}')]))
    message = SimpleNamespace(topic="t", partition=2, offset=0, value=value)
    record = SimpleNamespace(key=rowbatch.batch_key(2, "w", 0), value=value, message=message)
    table.data.apply_changelog_batch([record], to_key=None, to_value=None)
    assert table.data.data.get("m-1") == b'{"a":1}' and table.data.data.live(2) == 1
    assert table.row_log.partitions[2].rows == 1


def test_the_monitor_keeps_per_record_only_what_fausts_stall_checks_read() -> None:
    from faust.types import TP

    app = create_app(settings_from_env({}), parts=()).app
    monitor = app.monitor
    tp = TP("appfirst.dispatches", 3)
    message = SimpleNamespace(time_in=None)
    monitor.on_message_in(tp, 7, message)
    assert monitor.on_stream_event_in(tp, 7, SimpleNamespace(), SimpleNamespace()) is None
    monitor.on_stream_event_out(tp, 7, SimpleNamespace(), SimpleNamespace(), None)
    monitor.on_message_out(tp, 7, message)
    assert tp in monitor.stream_inbound_time  # "stream is not processing" stays true
    assert monitor.messages_received_total == 0 and monitor.events_total == 0
    assert message.time_in is None  # nothing kept on the record either

"""The AsyncAPI document (topics/asyncapi.py, docs/asyncapi.json) against the catalogue,
the schemas, the agents in streams/ and the AsyncAPI 3.0 specification.

No AsyncAPI validator is installed here, so the structure the 3.0 schema requires is
checked field by field: required fields, the fields each object may have, the Kafka
binding 0.5.0 fields, and that every ``$ref`` resolves from the document's root.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from appfirst.cli import main
from appfirst.settings import Settings, get_settings
from appfirst.topics import catalogue
from appfirst.topics.asyncapi import (
    AVRO_SCHEMA_FORMAT,
    DEFAULT_PARTITIONS,
    DEFAULT_PREFIX,
    DEFAULT_REPLICAS,
    WORKER,
    build_document,
    render,
)
from appfirst.topics.catalogue import CATALOGUE, INTERNAL_TOPICS
from appfirst.topics.schemas import schema_for

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "docs" / "asyncapi.json"
STREAMS = ROOT / "streams"

EXTENSION = re.compile(r"^x-[\w\d.\-_]+$")
COMPONENT_KEY = re.compile(r"^[\w\d.\-_]+$")

# The fields AsyncAPI 3.0.0 allows on each object (besides x- extensions).
ALLOWED: dict[str, set[str]] = {
    "root": {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    },
    "info": {
        "title",
        "version",
        "description",
        "termsOfService",
        "contact",
        "license",
        "tags",
        "externalDocs",
    },
    "server": {
        "host",
        "protocol",
        "protocolVersion",
        "pathname",
        "description",
        "title",
        "summary",
        "variables",
        "security",
        "tags",
        "externalDocs",
        "bindings",
    },
    "serverVariable": {"enum", "default", "description", "examples"},
    "channel": {
        "address",
        "messages",
        "title",
        "summary",
        "description",
        "servers",
        "parameters",
        "tags",
        "externalDocs",
        "bindings",
    },
    "message": {
        "headers",
        "payload",
        "correlationId",
        "contentType",
        "name",
        "title",
        "summary",
        "description",
        "tags",
        "externalDocs",
        "bindings",
        "examples",
        "traits",
    },
    "operation": {
        "action",
        "channel",
        "title",
        "summary",
        "description",
        "security",
        "tags",
        "externalDocs",
        "bindings",
        "traits",
        "messages",
        "reply",
    },
    "tag": {"name", "description", "externalDocs"},
    "multiFormatSchema": {"schemaFormat", "schema"},
    "components": {
        "schemas",
        "servers",
        "channels",
        "operations",
        "messages",
        "securitySchemes",
        "serverVariables",
        "parameters",
        "correlationIds",
        "replies",
        "replyAddresses",
        "externalDocs",
        "tags",
        "operationTraits",
        "messageTraits",
        "serverBindings",
        "channelBindings",
        "operationBindings",
        "messageBindings",
    },
    # Kafka bindings 0.5.0, the version AsyncAPI 3.0.0 names.
    "kafkaChannel": {"topic", "partitions", "replicas", "topicConfiguration", "bindingVersion"},
    "kafkaMessage": {
        "key",
        "schemaIdLocation",
        "schemaIdPayloadEncoding",
        "schemaLookupStrategy",
        "bindingVersion",
    },
    "kafkaOperation": {"groupId", "clientId", "bindingVersion"},
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    # A JSON round trip: what an integrator's tool reads is the serialised document.
    parsed: dict[str, Any] = json.loads(render(build_document()))
    return parsed


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document are used"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def check_fields(obj: Any, kind: str, where: str, required: tuple[str, ...] = ()) -> None:
    assert isinstance(obj, dict), f"{where} is not an object"
    unknown = {k for k in obj if k not in ALLOWED[kind] and not EXTENSION.match(k)}
    assert not unknown, f"{where}: fields a {kind} may not have: {sorted(unknown)}"
    missing = [k for k in required if k not in obj]
    assert not missing, f"{where}: lacks {missing}"


def all_topics() -> list[str]:
    return [spec.name for spec in CATALOGUE] + list(INTERNAL_TOPICS)


# --- the specification's structure ---------------------------------------------------------


def test_root_info_and_server(doc: dict[str, Any]) -> None:
    check_fields(doc, "root", "document", ("asyncapi", "info"))
    assert doc["asyncapi"] == "3.0.0"
    check_fields(doc["info"], "info", "info", ("title", "version"))
    assert all(isinstance(doc["info"][k], str) for k in ("title", "version", "description"))
    assert "APPFIRST_TOPIC_PREFIX" in doc["info"]["description"]
    assert f"`{DEFAULT_PREFIX}`" in doc["info"]["description"]

    assert list(doc["servers"]) == ["kafka"]
    server = doc["servers"]["kafka"]
    check_fields(server, "server", "servers.kafka", ("host", "protocol"))
    assert server["protocol"] == "kafka"
    variables = re.findall(r"\{([^}]+)\}", server["host"])
    assert variables == ["bootstrap"]
    for name, variable in server["variables"].items():
        check_fields(variable, "serverVariable", f"servers.kafka.variables.{name}")
        assert re.fullmatch(r"[^:]+:\d+", variable["default"])


def test_every_ref_resolves_from_the_root(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)
    # pydantic's local definitions would resolve against the wrong root in AsyncAPI.
    assert "$defs" not in json.dumps(doc)


def test_map_keys_are_valid_ids(doc: dict[str, Any]) -> None:
    keys = [*doc["channels"], *doc["operations"]]
    for section in doc["components"].values():
        keys += list(section)
    for channel in doc["channels"].values():
        keys += list(channel["messages"])
    bad = [k for k in keys if not COMPONENT_KEY.match(k)]
    assert not bad


def test_channels_messages_and_bindings_have_the_spec_fields(doc: dict[str, Any]) -> None:
    check_fields(doc["components"], "components", "components")
    for name, tag in doc["components"]["tags"].items():
        check_fields(tag, "tag", f"components.tags.{name}", ("name",))
    for name, channel in doc["channels"].items():
        check_fields(channel, "channel", f"channels.{name}", ("address", "messages"))
        assert channel["messages"], f"channels.{name} has no message"
        kafka = channel["bindings"]["kafka"]
        check_fields(kafka, "kafkaChannel", f"channels.{name}.bindings.kafka")
        assert kafka["bindingVersion"] == "0.5.0"
        for tag in channel["tags"]:
            check_fields(deref(doc, tag), "tag", f"channels.{name}.tags")
        for mid, message in channel["messages"].items():
            where = f"channels.{name}.messages.{mid}"
            check_fields(message, "message", where, ("payload", "contentType"))
            binding = message["bindings"]["kafka"]
            check_fields(binding, "kafkaMessage", f"{where}.bindings.kafka", ("key",))
            assert binding["bindingVersion"] == "0.5.0"


def test_operations_send_or_receive_messages_of_their_channel(doc: dict[str, Any]) -> None:
    assert doc["operations"]
    for oid, op in doc["operations"].items():
        check_fields(op, "operation", f"operations.{oid}", ("action", "channel"))
        assert op["action"] in ("send", "receive")
        channel_ref = op["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        channel = resolve(doc, channel_ref)
        assert op["messages"], f"operations.{oid} names no message"
        for message in op["messages"]:
            # The 3.0 rule: an operation's messages are its channel's.
            assert message["$ref"].startswith(channel_ref + "/messages/")
            assert resolve(doc, message["$ref"]) in channel["messages"].values()
        kafka = op.get("bindings", {}).get("kafka")
        if kafka is not None:
            check_fields(kafka, "kafkaOperation", f"operations.{oid}.bindings.kafka")


# --- the catalogue -------------------------------------------------------------------------


def test_every_catalogue_topic_is_a_channel(doc: dict[str, Any]) -> None:
    assert sorted(doc["channels"]) == sorted(all_topics())
    for name in all_topics():
        channel = doc["channels"][name]
        assert channel["address"] == Settings(topic_prefix=DEFAULT_PREFIX).topic(name)
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]


def test_addresses_use_the_prefix() -> None:
    doc = build_document(prefix="pilot.", partitions=12, replicas=3)
    for name, channel in doc["channels"].items():
        assert channel["address"] == f"pilot.{name}"
        assert channel["bindings"]["kafka"]["partitions"] == 12
        assert channel["bindings"]["kafka"]["replicas"] == 3
    groups = [
        op["bindings"]["kafka"]["groupId"]
        for op in doc["operations"].values()
        if "groupId" in op.get("bindings", {}).get("kafka", {})
    ]
    assert groups
    assert all(g == {"type": "string", "enum": ["pilot.worker"]} for g in groups)


def test_public_and_internal_topics_are_marked(doc: dict[str, Any]) -> None:
    public = {spec.name for spec in CATALOGUE}
    for name, channel in doc["channels"].items():
        tags = [deref(doc, t)["name"] for t in channel["tags"]]
        assert tags == (["public"] if name in public else ["internal"])
        assert ("**Internal**" in channel["description"]) == (name not in public)
    for op in doc["operations"].values():
        assert op["tags"] == resolve(doc, op["channel"]["$ref"])["tags"]


def test_topic_configuration_follows_the_catalogue(doc: dict[str, Any]) -> None:
    for spec in CATALOGUE:
        kafka = doc["channels"][spec.name]["bindings"]["kafka"]
        assert kafka["partitions"] == DEFAULT_PARTITIONS
        assert kafka["replicas"] == DEFAULT_REPLICAS
        config = kafka["topicConfiguration"]
        assert {k: str(v[0] if isinstance(v, list) else v) for k, v in config.items()} == (
            spec.config()
        )
    for name, retention in INTERNAL_TOPICS.items():
        config = doc["channels"][name]["bindings"]["kafka"]["topicConfiguration"]
        assert config == {"cleanup.policy": [retention]}


def test_keys_are_described(doc: dict[str, Any]) -> None:
    for spec in CATALOGUE:
        for message in doc["channels"][spec.name]["messages"].values():
            key = message["bindings"]["kafka"]["key"]
            assert key["description"]
            assert "string" in key["type"]
            if spec.key in spec.model.model_fields:
                field = spec.model.model_json_schema()["properties"].get(spec.key, {})
                assert f"`{spec.key}`" in key["description"]
                for constraint in ("pattern", "minLength", "maxLength"):
                    assert key.get(constraint) == field.get(constraint)
    for name in INTERNAL_TOPICS:
        for message in doc["channels"][name]["messages"].values():
            assert message["bindings"]["kafka"]["key"]["description"]


# --- payloads -----------------------------------------------------------------------------


def test_json_payloads_are_the_models(doc: dict[str, Any]) -> None:
    for spec in CATALOGUE:
        messages = doc["channels"][spec.name]["messages"]
        payload = deref(doc, messages[f"{spec.model.__name__}Json"]["payload"])
        expected = spec.model.model_json_schema()
        assert payload["type"] == "object"
        assert payload["properties"].keys() == expected["properties"].keys()
        assert payload.get("required") == expected.get("required")
        assert messages[f"{spec.model.__name__}Json"]["contentType"] == "application/json"


def test_examples_are_valid_events(doc: dict[str, Any]) -> None:
    seen = 0
    for spec in CATALOGUE:
        for message in doc["channels"][spec.name]["messages"].values():
            for example in message.get("examples", []):
                assert set(example) <= {"name", "summary", "headers", "payload"}
                spec.model.model_validate(example["payload"])
                seen += 1
    assert seen


def test_internal_payloads_resolve(doc: dict[str, Any]) -> None:
    from dataclasses import fields

    from appfirst.rules.pilot import Fact

    for name in INTERNAL_TOPICS:
        for message in doc["channels"][name]["messages"].values():
            payload = deref(doc, message["payload"])
            assert payload["type"] == "object" and payload["properties"], name
            assert message["contentType"] == "application/json"
    facts = doc["channels"][catalogue.METRIC_FACTS]["messages"]["MetricFactsJson"]
    fact = deref(doc, deref(doc, facts["payload"])["properties"]["facts"]["items"])
    assert set(fact["properties"]) == {f.name for f in fields(Fact)}


def test_avro_payloads_are_the_schemas_and_parse(doc: dict[str, Any]) -> None:
    for spec in CATALOGUE:
        current = schema_for(spec.model)
        avro_messages = [
            m
            for m in doc["channels"][spec.name]["messages"].values()
            if m["contentType"] == "application/octet-stream"
        ]
        assert avro_messages, spec.name
        for message in avro_messages:
            payload = deref(doc, message["payload"])
            check_fields(payload, "multiFormatSchema", f"{spec.name} Avro payload")
            assert payload["schemaFormat"] == AVRO_SCHEMA_FORMAT
            parse_schema(payload["schema"], _write_hint=False)
            canonical = to_parsing_canonical_form(payload["schema"])
            assert bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")) == current.fingerprint


def test_encodings_per_topic(doc: dict[str, Any]) -> None:
    """Every topic the worker reads takes JSON, Avro and Confluent; it writes JSON or Avro."""
    for spec in CATALOGUE:
        event = spec.model.__name__
        messages = doc["channels"][spec.name]["messages"]
        reads = bool(WORKER[spec.name].receives or WORKER[spec.name].broadcast)
        expected = {f"{event}Json", f"{event}Avro"} | ({f"{event}Confluent"} if reads else set())
        assert set(messages) == expected
        avro = messages[f"{event}Avro"]
        assert avro["x-avro-fingerprint"] == schema_for(spec.model).fingerprint.hex()
        if reads:
            confluent = messages[f"{event}Confluent"]["bindings"]["kafka"]
            assert confluent["schemaIdLocation"] == "payload"
        for op in doc["operations"].values():
            if op["action"] == "send" and op["channel"]["$ref"] == f"#/channels/{spec.name}":
                assert not any(m["$ref"].endswith("Confluent") for m in op["messages"])


# --- operations against the agents -------------------------------------------------------


def _topic_name(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.Name), ast.dump(node)
    name = getattr(catalogue, node.id)
    assert isinstance(name, str)
    return name


def _topic_objects() -> dict[str, tuple[str, ...]]:
    """streams/topics.py: each attribute of ``Topics`` and the topic names it stands for."""
    tree = ast.parse((STREAMS / "topics.py").read_text(encoding="utf-8"))
    found: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Attribute)
            and isinstance(node.targets[0].value, ast.Name)
            and node.targets[0].value.id == "self"
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "topic"
        ):
            found[node.targets[0].attr] = tuple(_topic_name(a) for a in node.value.args)
    return found


SEND_HELPERS = frozenset({"send", "send_acknowledged"})


def _topics_of(node: ast.expr, objects: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The topics ``node`` stands for if it is a topic object: ``topics.<name>``, or
    ``self.topics.<name>`` / ``context.topics.<name>``."""
    if not (isinstance(node, ast.Attribute) and node.attr in objects):
        return None
    holder = node.value
    if (isinstance(holder, ast.Name) and holder.id == "topics") or (
        isinstance(holder, ast.Attribute) and holder.attr == "topics"
    ):
        return objects[node.attr]
    return None


def _is_context(node: ast.expr) -> bool:
    """``context`` or ``self.context``: a part's ``Context`` (streams/context.py)."""
    return (isinstance(node, ast.Name) and node.id == "context") or (
        isinstance(node, ast.Attribute) and node.attr == "context"
    )


def _agent_use() -> tuple[set[str], set[str], set[str]]:
    """(topics agents consume, topics read whole into broadcast tables, topics sent to),
    read from the sources of streams/, where every part names a topic as
    ``topics.<name>`` (streams/topics.py)."""
    objects = _topic_objects()
    receives: set[str] = set()
    broadcast: set[str] = set()
    sends: set[str] = set()
    for path in sorted(STREAMS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A topic object bound to another name (ingress picks one per event).
        local: dict[str, tuple[str, ...]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and (found := _topics_of(node.value, objects)):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        local[target.id] = local.get(target.id, ()) + found

        def topic_of(node: ast.expr) -> tuple[str, ...] | None:
            if isinstance(node, ast.Name):
                return local.get(node.id)  # noqa: B023 - used within this iteration
            return _topics_of(node, objects)

        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            # ``context.agent(topics.<source>)(self._method)``: crash-only agents.
            if (
                isinstance(func, ast.Call)
                and isinstance(func.func, ast.Attribute)
                and func.func.attr == "agent"
                and _is_context(func.func.value)
                and func.args
            ):
                found = topic_of(func.args[0])
                assert found, ast.dump(func.args[0])
                receives.update(found)
            # ``context.broadcast(<topic name>, apply)``: a table of every partition.
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "broadcast"
                and _is_context(func.value)
                and node.args
            ):
                broadcast.add(_topic_name(node.args[0]))
            # Either ``topic.send(...)`` or a helper of streams/io.py taking the topic first
            # (``send``, or ``send_acknowledged``, which waits for the broker's ack).
            target: ast.expr | None = None
            if isinstance(func, ast.Attribute) and func.attr == "send" and topic_of(func.value):
                target = func.value
            elif isinstance(func, ast.Attribute) and func.attr in SEND_HELPERS and node.args:
                target = node.args[0]
            if target is not None and (found := topic_of(target)):
                sends.update(found)
    return receives, broadcast, sends


def test_operations_match_the_agents() -> None:
    receives, broadcast, sends = _agent_use()
    assert receives and sends  # the reading of streams/ found the agents at all
    assert {t for t, u in WORKER.items() if u.receives} == receives
    assert {t for t, u in WORKER.items() if u.broadcast} == broadcast
    assert {t for t, u in WORKER.items() if u.sends} == sends


def test_operations_follow_the_worker_table(doc: dict[str, Any]) -> None:
    actions = {
        (op["action"], op["channel"]["$ref"].removeprefix("#/channels/"))
        for op in doc["operations"].values()
    }
    expected = {("receive", t) for t, u in WORKER.items() if u.receives or u.broadcast}
    expected |= {("send", t) for t, u in WORKER.items() if u.sends}
    assert actions == expected
    assert set(WORKER) == set(all_topics())


# --- the committed document and the command ----------------------------------------------


def test_committed_document_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(build_document()), (
        "docs/asyncapi.json is stale: regenerate it with "
        "`appfirst asyncapi --out docs/asyncapi.json` (no APPFIRST_ variables set)"
    )


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("TOPIC_PREFIX", "PARTITIONS", "REPLICATION_FACTOR"):
        monkeypatch.delenv(f"APPFIRST_{name}", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("default_settings")
def test_command_writes_the_committed_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    result = CliRunner().invoke(main, ["asyncapi", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    printed = CliRunner().invoke(main, ["asyncapi", "--format", "json"])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == json.loads(COMMITTED.read_text(encoding="utf-8"))


@pytest.mark.usefixtures("default_settings")
def test_command_uses_the_prefix_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPFIRST_TOPIC_PREFIX", "staging.")
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["asyncapi"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["channels"]["send-requests"]["address"] == "staging.send-requests"


@pytest.mark.usefixtures("default_settings")
def test_command_yaml(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = CliRunner().invoke(main, ["asyncapi", "--out", str(out)])
    if find_spec("yaml") is None:
        assert result.exit_code == 2
        assert "PyYAML" in result.output
        return
    import yaml

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == json.loads(
        COMMITTED.read_text(encoding="utf-8")
    )

"""The README is a tested contract: its examples are read out of README.md and run as they are
written, so that a README change that breaks one fails here.

- Quickstart: each `make X` is a target of the Makefile (the targets themselves are the demo
  and the whole suite, not run here).
- Producing to driftloop: the Python producer block runs against a running ingestion (its
  address and topic prefix replaced by the test's) and its event and label reach
  events.clean and labels.clean.
- Data contracts: the YAML block is loaded as a contract, and the message the README quotes is
  the one a breaking record gets.
- Features: the settings table's DRIFTLOOP_FEATURES_WINDOWS example and every STAT and KIND
  the section lists parse, the feature is named as the README says, and a sliding mean is the
  mean of the hour up to the event.
- Command line: every `driftloop ...` line of the synopsis (each option filled in with a value
  of its placeholder) and every inline `driftloop ...` example is accepted by the parser; the
  cheap ones run (`features export | head -1` ends quietly, the lifecycle_sim example's
  options exist). A bad value of each of fifteen settings (names, choices, bounds, files, specs)
  is one line before any connection, as the settings section says.
The README has no curl example (the HTTP endpoint is described, not shown), so none is run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.cli import build_parser
from driftloop.runner import Stack
from driftloop.services.features.spec import FeatureSpec
from driftloop.services.ingestion.contract import Contract
from driftloop.shared.broker import free_port
from driftloop.shared.errors import ContractViolation
from driftloop.shared.kafka import read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, LABELS_CLEAN, Topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text under the heading ``title`` up to the next heading of the same or a higher level."""
    m = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert m, f"README has no section {title!r}"
    level = len(m.group(1))
    rest = README[m.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def code_blocks(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def inline_code(text: str) -> list[str]:
    # Inline spans may wrap across a line break, as the README's prose does; fenced blocks are not prose.
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


# --- Quickstart ----------------------------------------------------------------------------


def test_quickstart_commands_are_makefile_targets() -> None:
    (block,) = code_blocks(section("Quickstart"))[:1]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert commands, "the quickstart block shows no command"
    makefile = (ROOT / "Makefile").read_text()
    for words in commands:
        assert words[0] == "make" and len(words) == 2, words
        assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), f"make {words[1]} is no Makefile target"


# --- Producing to driftloop ---------------------------------------------------------------


def test_producer_example_reaches_events_clean_and_labels_clean(
    service_env: dict[str, str], topics: Topics, tmp_path: Path
) -> None:
    (script,) = code_blocks(section("Producing to driftloop"), "python")
    # As written but for where it sends: the test's broker and topic prefix.
    assert script.count('"localhost:9092"') == 1 and script.count('"driftloop.') == 2, script
    script = script.replace('"localhost:9092"', repr(service_env["KAFKA_BOOTSTRAP_SERVERS"]))
    script = script.replace('"driftloop.', f'"{topics.prefix}')
    (tmp_path / "producer.py").write_text(script)
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        stack.wait_ready(60)
        run = subprocess.run(
            [sys.executable, str(tmp_path / "producer.py")], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        events = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN), idle_timeout_s=3))
        labels = asyncio.run(read_topic(bootstrap, topics.name(LABELS_CLEAN), idle_timeout_s=1))
        dead = asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER), idle_timeout_s=1))
        stack.check()
    assert dead == [], "the README's producer example was dead-lettered"
    assert [Serde.leading_string(r.value) for r in events] == ["o-1842"]
    assert [Serde.leading_string(r.value) for r in labels] == ["o-1842"]
    assert events[0].key == b"customer-7"


# --- Data contracts -----------------------------------------------------------------------


def test_contract_example_loads_and_gives_the_message_the_readme_quotes() -> None:
    text = section("Data contracts")
    (block,) = code_blocks(text, "yaml")
    contract = Contract.from_text(block, "README")
    quoted = next(s for s in inline_code(text) if s.startswith("field 'nswprice'"))
    now = 1_800_000_000_000
    event = {"event_id": "e", "entity_id": "x", "event_time": now, "fields": {"nswprice": 0.5, "day": 3}}
    contract.check_event(event)  # a record that keeps every rule passes
    with pytest.raises(ContractViolation) as broken:
        contract.check_event({**event, "fields": {"nswprice": 7.5}})
    assert quoted in str(broken.value)
    contract.check_event({**event, "fields": {"nswprice": 0.5, "other": 1}})  # extra_fields: allow
    for fields in ({"day": 3}, {"nswprice": 0.5, "region": "QLD"}, {"nswprice": 0.5, "day": 8}):
        with pytest.raises(ContractViolation):
            contract.check_event({**event, "fields": fields})  # required, allowed, max
    contract.check_label({"event_id": "e", "entity_id": "x", "label": "UP", "label_time": now})
    with pytest.raises(ContractViolation):
        contract.check_label({"event_id": "e", "entity_id": "x", "label": "SIDEWAYS", "label_time": now})


# --- Features -----------------------------------------------------------------------------


def test_window_examples_parse_and_name_their_features() -> None:
    row = next(line for line in section("Settings").splitlines() if line.startswith("| `DRIFTLOOP_FEATURES_WINDOWS`"))
    (example,) = re.findall(r"e\.g\. `([^`]+)`", row)
    spec = FeatureSpec.parse("fs1", example)
    text = section("Features and offline store")
    named = re.search(r"e\.g\. `([a-z0-9_]+)`", text)
    assert named and named.group(1) in [a.name for a in spec.aggregates], (named, spec.aggregates)
    stats_line = next(line for line in text.splitlines() if line.startswith("- STAT:"))
    stats = [s.replace("ewma=ALPHA", "ewma=0.5") for s in re.findall(r"`([a-z_=A-Z]+)`", stats_line)]
    kinds = [k for k in inline_code(text) if re.fullmatch(r"(sliding|tumbling|hopping):[0-9a-z:]+", k)]
    assert len(stats) >= 7 and {k.split(":")[0] for k in kinds} == {"sliding", "tumbling", "hopping"}
    for stat in stats:
        for kind in kinds:
            FeatureSpec.parse("fs1", f"nswprice:{stat}:{kind}")
    FeatureSpec.parse("fs1", f"{example},ratio:nswprice_mean_sliding_1h:nswprice")

    # "sliding:1h (the hour up to the event)": the mean of the events of the last hour.
    mean = FeatureSpec.parse("fs1", "nswprice:mean:sliding:1h")
    state = None
    t0 = 1_800_000_000_000
    for i, (offset_s, price) in enumerate([(0, 10.0), (1800, 20.0), (3700, 40.0)]):
        event = {
            "event_id": f"e{i}",
            "entity_id": "x",
            "event_time": t0 + offset_s * 1000,
            "fields": {"nswprice": price},
        }
        vector, outcome = mean.update(event, state)
        state = outcome.state
    assert vector["features"]["nswprice_mean_sliding_1h"] == pytest.approx(30.0)  # 20 and 40; 10 is 3700 s old


# --- Command line -------------------------------------------------------------------------

#: A value of each placeholder the synopsis uses, of the type the option takes.
PLACEHOLDERS = {
    "N": "1",
    "E": "auto",
    "COL": "class",
    "CSV": "data.csv",
    "PATH": "data.csv",
    "DIR": "out",
    "FILE": "out.jsonl",
    "DATE": "2026-01-01",
    "LIST": "adwin",
    "V": "1",
    "NAME": "default",
    "TEXT": "why",
    "SERVICE": "ingestion",
}


def fill(words: list[str]) -> list[str]:
    out = []
    for w in words:
        choice = w.split("|")[0] if "|" in w else w  # one of the alternatives
        out.append(PLACEHOLDERS.get(choice, choice))
    return out


def synopsis_commands() -> list[list[str]]:
    """Every command of the Command line block, each with all of its bracketed options."""
    (block,) = code_blocks(section("Command line"))[:1]
    commands = []
    for line in block.splitlines():
        line = line.split("#")[0].strip()
        if not line.startswith("driftloop "):
            continue
        head, *options = re.split(r"\s*\[", line, maxsplit=1)
        bracketed = re.findall(r"\[([^\]]+)\]", "[" + options[0]) if options else []
        words = head.split()[1:]
        if " | " in head:  # `models list | show V | ...`: one command per alternative
            command, first = words[0], " ".join(words[1:])
            alternatives = [alt.split() for alt in first.split(" | ")]
        else:
            command, alternatives = words[0], [words[1:]]
        for alt in alternatives:
            args = [command, *fill(alt)]
            for opt in bracketed:
                args += fill(opt.split())
            commands.append(args)
    return commands


def inline_commands() -> list[list[str]]:
    spans = {s for s in inline_code(README) if s.startswith("driftloop ") and "|" not in s}
    return [fill(shlex.split(s)[1:]) for s in sorted(spans)]


def test_every_command_line_example_is_accepted_by_the_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synopsis, inline = synopsis_commands(), inline_commands()
    (tmp_path / "data.csv").write_text("x,class\n1,0\n")  # replay checks that its CSV is there
    monkeypatch.chdir(tmp_path)
    assert len(synopsis) >= 14 and len(inline) >= 8, (synopsis, inline)  # the parsing below found them
    parser = build_parser()
    for args in synopsis + inline:
        if args == ["models"]:
            continue  # prose naming the command group, whose subcommands the synopsis lists
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"the parser refuses the README's `driftloop {' '.join(args)}` (exit {exc.code})")


def test_features_export_into_a_closed_pipe_ends_quietly(tmp_path: Path, serde: Serde) -> None:
    from driftloop.services.features.offline import OfflineWriter

    schema = serde.registry.latest("FeatureVector")[1]
    writer = OfflineWriter(tmp_path / "store", {"features": schema})
    day = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    for i in range(5000):  # far more than a pipe holds, so that the writes meet the closed pipe
        vector = {"event_id": f"e{i}", "entity_id": "x", "event_time": day + i, "features": {"a": float(i)}}
        writer.append("features", {**vector, "feature_set_version": "fs1", "ingest_time": None})
    writer.flush(day)
    env = {"DRIFTLOOP_OFFLINE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    cmd = f"{shlex.quote(sys.executable)} -m driftloop.cli features export | head -1; echo rc=${{PIPESTATUS[0]}} >&2"
    run = subprocess.run(["bash", "-c", cmd], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout.count("\n") == 1 and '"event_id":"e0"' in run.stdout, run.stdout[:300]
    assert run.stderr == "rc=0\n", run.stderr


#: (service, setting, a bad value, what its one line says): each is refused before any connection.
BAD_SETTINGS = [
    ("inference", "DRIFTLOOP_INFERENCE_MODEL_SPEC", "gbm", "unknown model spec 'gbm'"),
    ("retraining", "DRIFTLOOP_RETRAINING_MODEL_SPEC", "gbm", "unknown model spec 'gbm'"),
    ("retraining", "DRIFTLOOP_RETRAINING_TASK", "ranking", "task"),
    ("inference", "DRIFTLOOP_LOG_LEVEL", "LOUD", "DRIFTLOOP_LOG_LEVEL"),
    ("ingestion", "DRIFTLOOP_TOPIC_PREFIX", "my topics/", "DRIFTLOOP_TOPIC_PREFIX"),
    ("inference", "DRIFTLOOP_MODEL_NAME", "a:b", "DRIFTLOOP_MODEL_NAME"),
    ("features", "DRIFTLOOP_FEATURE_SET_VERSION", "", "DRIFTLOOP_FEATURE_SET_VERSION"),
    ("monitoring", "DRIFTLOOP_METRICS_ADDR", "999.1.1.1", "DRIFTLOOP_METRICS_ADDR"),
    ("ingestion", "DRIFTLOOP_SCHEMA_DIR", "/no/such/dir", "DRIFTLOOP_SCHEMA_DIR"),
    ("ingestion", "DRIFTLOOP_PARTITIONS", "0", "partitions"),
    ("ingestion", "DRIFTLOOP_INGESTION_MAX_LATENESS_S", "-1", "max_lateness_s"),
    ("monitoring", "DRIFTLOOP_MONITORING_CONCEPT_DETECTORS", "adwin,oracle", "unknown drift detector 'oracle'"),
    ("monitoring", "DRIFTLOOP_MONITORING_INCIDENT_MAX_RECORDS", "100", "must be at least its window (1500)"),
    ("features", "DRIFTLOOP_FEATURES_WINDOWS", "price:mean", "DRIFTLOOP_FEATURES_WINDOWS"),
    ("inference", "DRIFTLOOP_ARTIFACT_STORE", "s3://bucket", "only file://"),
    ("ingestion", "DRIFTLOOP_SECURITY_PROTOCOL", "SASL_PLAINTEXT", "DRIFTLOOP_SASL_USERNAME"),
]


@pytest.mark.parametrize(("service", "name", "value", "says"), BAD_SETTINGS, ids=[b[1] for b in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_before_connecting(service: str, name: str, value: str, says: str) -> None:
    env = {
        name: value,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens: it must not get that far
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "run", service],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and run.stdout == "", run.stdout
    assert run.stderr.count("\n") == 1 and says in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_lifecycle_sim_example_options_exist() -> None:
    example = next(s for s in inline_code(README) if s.startswith("python -m driftloop.lifecycle_sim"))
    help_text = subprocess.run(
        [sys.executable, "-m", "driftloop.lifecycle_sim", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for option in re.findall(r"--[a-z-]+", example):
        assert option in help_text, option
    missing = subprocess.run(
        [sys.executable, "-m", "driftloop.lifecycle_sim", "--dataset", "no-such.csv", "--target", "class"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr


def test_the_bounds_the_producing_section_names_are_the_code_s() -> None:
    from driftloop.services.ingestion.validate import Limits
    from driftloop.shared.serde import MAX_MAP_ENTRIES
    from driftloop.shared.settings import IngestionSettings

    text = " ".join(section("Producing to driftloop").split())
    assert f"a map of more than {MAX_MAP_ENTRIES:,} entries" in text
    assert f"`DRIFTLOOP_INGESTION_MAX_RECORD_BYTES` ({IngestionSettings().max_record_bytes:,})" in text
    assert f"`DRIFTLOOP_INGESTION_MAX_LATENESS_S` ({Limits().max_lateness_ms // (24 * 3600 * 1000)} days)" in text
    assert IngestionSettings().max_lateness_s * 1000 == Limits().max_lateness_ms

"""The deployment files agree with the code.

Static checks (no broker, no Docker) of Dockerfile, docker-compose.yml,
prometheus/prometheus.yml and k8s/*.yaml against ``driftloop.shared.settings``:

* compose and k8s run exactly the services in ``SERVICES``, each with
  ``run <its own name>``, plus a one-shot ``topics`` step;
* every environment variable they set is one the process actually reads
  (``env_var_names``), so a misspelt variable cannot silently be ignored;
* each service's metrics port is its settings default unless the deployment
  overrides it, and compose ports, k8s ports/probes/Services and the Prometheus
  targets all use that same port; so does each HTTP port (inference's OIP, ingestion's HTTP ingest), whose k8s
  readiness and liveness probes are its health endpoints;
* the CLI accepts ``run NAME`` for every service and rejects unknown names;
* compose's ``cluster`` profile is three Kafka nodes of the pinned version, replicating
  three times with two in sync, whose voters are the nodes on their controller listeners,
  and the services can be pointed at it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftloop.shared.settings import SERVICE_SETTINGS, SERVICES, env_var_names, secret_env_names

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_FILE = REPO_ROOT / "prometheus" / "prometheus.yml"
K8S_DIR = REPO_ROOT / "k8s"

IMAGE = "driftloop:latest"
ARTIFACTS_CLAIM = "driftloop-artifacts"
NAMESPACE = "driftloop"

# Variables every process reads; the only ones allowed where a setting applies
# to all processes (compose's shared block, the topics step, the Dockerfile).
COMMON_ENV = set.intersection(*(env_var_names(s) for s in SERVICES))


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def metrics_port_var(service: str) -> str:
    prefix = SERVICE_SETTINGS[service].model_config.get("env_prefix", "")
    return f"{prefix}METRICS_PORT".upper()


def expected_port(service: str, env: dict[str, str | None], defaults: dict[str, int], where: str) -> int:
    """The port a service listens on given the environment a deployment sets."""
    var = metrics_port_var(service)
    if var not in env:
        return defaults[service]
    value = env[var]
    assert value is not None and str(value).isdigit(), f"{where}: {var} must be a literal port number, got {value!r}"
    return int(value)


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def default_ports() -> dict[str, int]:
    """Each service's metrics port from its settings class, ignoring this shell's env."""
    with pytest.MonkeyPatch.context() as mp:
        for name in env_var_names():
            mp.delenv(name, raising=False)
        return {s: SERVICE_SETTINGS[s]().metrics_port for s in SERVICES}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        f"{rel(COMPOSE_FILE)}: no `services` mapping"
    )
    return data


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    with PROMETHEUS_FILE.open() as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), f"{rel(PROMETHEUS_FILE)}: not a mapping"
    return data


@pytest.fixture(scope="module")
def k8s() -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every document in k8s/*.yaml."""
    files = sorted([*K8S_DIR.glob("*.yaml"), *K8S_DIR.glob("*.yml")])
    assert files, f"no manifests in {rel(K8S_DIR)}"
    objects = []
    for path in files:
        with path.open() as fh:
            for doc in yaml.safe_load_all(fh):
                if doc is None:
                    continue
                assert isinstance(doc, dict) and "kind" in doc, f"{rel(path)}: a document is not a Kubernetes object"
                objects.append((rel(path), doc))
    return objects


# --------------------------------------------------------------------------- compose


def compose_command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def compose_env(name: str, svc: dict[str, Any]) -> dict[str, str | None]:
    where = f"{rel(COMPOSE_FILE)}: service {name!r}"
    assert "env_file" not in svc, f"{where}: env_file cannot be checked; use `environment`"
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    pairs = (str(item).partition("=") for item in env)
    return {k: (v if sep else None) for k, sep, v in pairs}


def compose_container_ports(svc: dict[str, Any]) -> set[int]:
    """Container-side ports from `ports` (short or long syntax) and `expose`."""
    found: set[int] = set()

    def add(spec: str) -> None:
        spec = spec.split("/")[0]
        lo, _, hi = spec.partition("-")
        found.update(range(int(lo), int(hi or lo) + 1))

    for item in svc.get("ports") or []:
        if isinstance(item, dict):
            add(str(item["target"]))
        else:
            add(str(item).rsplit(":", 1)[-1])
    for item in svc.get("expose") or []:
        add(str(item))
    return found


def driftloop_compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run the driftloop image."""
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == IMAGE or "build" in svc}


def compose_runners(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Compose service name -> command, for services whose command is `run ...`."""
    runners = {}
    for name, svc in compose["services"].items():
        cmd = compose_command(svc)
        if cmd[:1] == ["run"]:
            runners[name] = cmd
    return runners


def test_compose_runs_each_service_once_under_its_own_name(compose):
    runners = compose_runners(compose)
    assert set(runners) == set(SERVICES), (
        f"{rel(COMPOSE_FILE)}: services running `run NAME` are {sorted(runners)}, expected {sorted(SERVICES)}"
    )
    for name, cmd in runners.items():
        assert cmd == ["run", name], f"{rel(COMPOSE_FILE)}: service {name!r} runs {cmd}, expected ['run', {name!r}]"


def test_compose_driftloop_containers_are_services_or_topics(compose):
    for name, svc in driftloop_compose_services(compose).items():
        cmd = compose_command(svc)
        assert svc.get("image") == IMAGE, (
            f"{rel(COMPOSE_FILE)}: service {name!r} uses image {svc.get('image')!r}, expected {IMAGE!r}"
        )
        assert cmd == ["topics"] or cmd[:1] == ["run"], (
            f"{rel(COMPOSE_FILE)}: service {name!r} runs {cmd}; expected `topics` or `run NAME`"
        )


def test_compose_topics_runs_first(compose):
    topics = [n for n, s in compose["services"].items() if compose_command(s) == ["topics"]]
    assert len(topics) == 1, f"{rel(COMPOSE_FILE)}: expected exactly one service running ['topics'], got {topics}"
    for name in compose_runners(compose):
        deps = compose["services"][name].get("depends_on") or {}
        condition = deps.get(topics[0], {}).get("condition") if isinstance(deps, dict) else None
        assert condition == "service_completed_successfully", (
            f"{rel(COMPOSE_FILE)}: service {name!r} must depend on {topics[0]!r} with "
            f"condition service_completed_successfully"
        )


def test_compose_env_vars_are_read_by_the_process(compose):
    for name, svc in driftloop_compose_services(compose).items():
        cmd = compose_command(svc)
        if cmd[:1] == ["run"] and name in SERVICES:
            allowed, reader = env_var_names(name), f"driftloop run {name}"
        elif cmd[:1] == ["run"]:
            continue  # an unknown service name; reported by the test above
        else:
            allowed, reader = COMMON_ENV, f"driftloop {' '.join(cmd)}"
        unknown = set(compose_env(name, svc)) - allowed
        assert not unknown, (
            f"{rel(COMPOSE_FILE)}: service {name!r} sets {sorted(unknown)}, which `{reader}` does not read"
        )


@pytest.mark.parametrize("service", SERVICES)
def test_compose_metrics_port(compose, default_ports, service):
    svc = compose["services"].get(service)
    assert svc is not None, f"{rel(COMPOSE_FILE)}: no service {service!r}"
    where = f"{rel(COMPOSE_FILE)}: service {service!r}"
    env = compose_env(service, svc)
    port = expected_port(service, env, default_ports, where)
    assert port in compose_container_ports(svc), f"{where}: metrics port {port} is not in its ports/expose"
    assert env.get("DRIFTLOOP_METRICS_ADDR") == "0.0.0.0", (
        f"{where}: DRIFTLOOP_METRICS_ADDR must be 0.0.0.0 so Prometheus can scrape it"
    )


def test_prometheus_scrapes_each_compose_service(compose, prometheus, default_ports):
    jobs: dict[str, list[str]] = {}
    for job in prometheus.get("scrape_configs") or []:
        name = job["job_name"]
        assert name not in jobs, f"{rel(PROMETHEUS_FILE)}: job {name!r} defined twice"
        jobs[name] = [t for sc in job.get("static_configs") or [] for t in sc["targets"]]
    assert set(jobs) == set(SERVICES), (
        f"{rel(PROMETHEUS_FILE)}: scrape jobs are {sorted(jobs)}, expected {sorted(SERVICES)}"
    )
    for service in SERVICES:
        svc = compose["services"].get(service, {})
        where = f"{rel(COMPOSE_FILE)}: service {service!r}"
        port = expected_port(service, compose_env(service, svc), default_ports, where)
        assert jobs[service] == [f"{service}:{port}"], (
            f"{rel(PROMETHEUS_FILE)}: job {service!r} scrapes {jobs[service]}, "
            f"expected ['{service}:{port}'] as in {rel(COMPOSE_FILE)}"
        )


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_env_names() -> set[str]:
    """Names set by ENV instructions (both `ENV K=V ...` and legacy `ENV K V`)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0].upper() == "ENV":
            tokens = shlex.split(words[1])
            if "=" in tokens[0]:
                names.update(t.split("=", 1)[0] for t in tokens)
            else:
                names.add(tokens[0])
    return names


def test_dockerfile_env_vars_are_common_settings():
    ours = {n for n in dockerfile_env_names() if n.startswith(("DRIFTLOOP_", "KAFKA_"))}
    unknown = ours - COMMON_ENV
    assert not unknown, f"{rel(DOCKERFILE)}: ENV sets {sorted(unknown)}, which not every driftloop process reads"


# --------------------------------------------------------------------------- k8s


def k8s_by_kind(k8s, kind: str) -> dict[str, tuple[str, dict[str, Any]]]:
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, obj in k8s:
        if obj.get("kind") == kind:
            name = obj["metadata"]["name"]
            assert name not in found, f"{path}: {kind} {name!r} also defined in {found[name][0]}"
            found[name] = (path, obj)
    return found


def only_container(path: str, obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{path}: {obj['kind']} {obj['metadata']['name']!r} should have one container"
    return containers[0]


def k8s_env(k8s, path: str, container: dict[str, Any]) -> dict[str, str | None]:
    """The environment a container gets: envFrom sources, then `env` (which wins).

    ConfigMaps and Secrets must be defined under k8s/ so their keys can be checked.
    """
    configmaps, secrets = k8s_by_kind(k8s, "ConfigMap"), k8s_by_kind(k8s, "Secret")
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, objects, kind = source["configMapRef"]["name"], configmaps, "ConfigMap"
        else:
            ref, objects, kind = source["secretRef"]["name"], secrets, "Secret"
        assert ref in objects, (
            f"{path}: container {container['name']!r} uses envFrom {kind} {ref!r}, "
            f"which is not defined in {rel(K8S_DIR)}"
        )
        data = objects[ref][1]
        for key, value in {**(data.get("data") or {}), **(data.get("stringData") or {})}.items():
            env[prefix + key] = str(value)
    for item in container.get("env") or []:
        env[item["name"]] = str(item["value"]) if "value" in item else None
    return env


def test_k8s_deployments_are_the_services(k8s):
    deployments = k8s_by_kind(k8s, "Deployment")
    assert set(deployments) == set(SERVICES), (
        f"{rel(K8S_DIR)}: Deployments are {sorted(deployments)}, expected {sorted(SERVICES)}"
    )


def test_k8s_objects_live_in_the_driftloop_namespace(k8s):
    namespaces = k8s_by_kind(k8s, "Namespace")
    assert NAMESPACE in namespaces, f"{rel(K8S_DIR)}: no Namespace {NAMESPACE!r}"
    for path, obj in k8s:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, (
                f"{path}: {obj['kind']} {obj['metadata']['name']!r} is not in namespace {NAMESPACE!r}"
            )


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment(k8s, default_ports, service):
    deployments = k8s_by_kind(k8s, "Deployment")
    assert service in deployments, f"{rel(K8S_DIR)}: no Deployment {service!r}"
    path, dep = deployments[service]
    what = f"{path}: Deployment {service!r}"
    assert path == rel(K8S_DIR / f"{service}.yaml"), f"{what} belongs in {rel(K8S_DIR / f'{service}.yaml')}"
    container = only_container(path, dep)
    assert "command" not in container, f"{what}: `command` would replace the image's `driftloop` entrypoint; use args"
    assert container.get("args") == ["run", service], (
        f"{what}: args are {container.get('args')}, expected ['run', {service!r}]"
    )
    assert container.get("image") == IMAGE, f"{what}: image is {container.get('image')!r}, expected {IMAGE!r}"

    env = k8s_env(k8s, path, container)
    unknown = set(env) - env_var_names(service)
    assert not unknown, (
        f"{what}: sets {sorted(unknown)} (directly or via envFrom), which `driftloop run {service}` does not read"
    )
    assert env.get("DRIFTLOOP_METRICS_ADDR") == "0.0.0.0", (
        f"{what}: DRIFTLOOP_METRICS_ADDR must be 0.0.0.0 so Prometheus can scrape the pod"
    )

    port = expected_port(service, env, default_ports, what)
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    assert named.get("metrics") == port, (
        f"{what}: container port named 'metrics' is {named.get('metrics')}, expected {port}"
    )
    if service not in HTTP_SERVICES:  # those are probed on their HTTP health (below)
        probe_port = (container.get("readinessProbe") or {}).get("tcpSocket", {}).get("port")
        assert probe_port in ("metrics", port), (
            f"{what}: readinessProbe must be tcpSocket on the metrics port, got {probe_port!r}"
        )
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    assert annotations.get("prometheus.io/scrape") == "true", (
        f'{what}: pod annotation prometheus.io/scrape must be "true"'
    )
    assert annotations.get("prometheus.io/port") == str(port), (
        f"{what}: pod annotation prometheus.io/port is "
        f"{annotations.get('prometheus.io/port')!r}, expected {str(port)!r}"
    )
    requests = (container.get("resources") or {}).get("requests") or {}
    assert {"cpu", "memory"} <= set(requests), f"{what}: needs cpu and memory requests"

    # The Service exposing /metrics selects this Deployment's pods.
    services = k8s_by_kind(k8s, "Service")
    assert service in services, f"{rel(K8S_DIR)}: no Service {service!r} for {what}"
    svc_path, svc = services[service]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    selector = svc["spec"].get("selector") or {}
    assert selector and selector.items() <= pod_labels.items(), (
        f"{svc_path}: Service {service!r} selector {selector} does not match the pods of Deployment {service!r}"
    )
    assert any(
        p.get("port") == port and p.get("targetPort", p.get("port")) in ("metrics", port)
        for p in svc["spec"].get("ports") or []
    ), f"{svc_path}: Service {service!r} does not expose metrics port {port}"


#: The services with HTTP endpoints, and the paths of their readiness and liveness checks.
HTTP_SERVICES = {
    "inference": ("/v2/health/ready", "/v2/health/live"),
    "ingestion": ("/v1/health/ready", "/v1/health/live"),
}


def expected_http_port(service: str, env: dict[str, str | None], where: str) -> int:
    var = metrics_port_var(service).replace("METRICS_PORT", "HTTP_PORT")
    if var not in env:
        with pytest.MonkeyPatch.context() as mp:
            for name in env_var_names():
                mp.delenv(name, raising=False)
            return int(SERVICE_SETTINGS[service]().http_port)  # type: ignore[attr-defined]
    value = env[var]
    assert value is not None and str(value).isdigit(), f"{where}: {var} must be a literal port number, got {value!r}"
    return int(value)


@pytest.mark.parametrize("service", sorted(HTTP_SERVICES))
def test_compose_http_port(compose, service):
    svc = compose["services"][service]
    where = f"{rel(COMPOSE_FILE)}: service {service!r}"
    port = expected_http_port(service, compose_env(service, svc), where)
    assert port in compose_container_ports(svc), f"{where}: HTTP port {port} is not in its ports/expose"


@pytest.mark.parametrize("service", sorted(HTTP_SERVICES))
def test_k8s_http_port_probes_and_service(k8s, service):
    path, dep = k8s_by_kind(k8s, "Deployment")[service]
    what = f"{path}: Deployment {service!r}"
    container = only_container(path, dep)
    port = expected_http_port(service, k8s_env(k8s, path, container), what)
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    assert named.get("http") == port, f"{what}: container port named 'http' is {named.get('http')}, expected {port}"
    ready_path, live_path = HTTP_SERVICES[service]
    for probe, want in (("readinessProbe", ready_path), ("livenessProbe", live_path)):
        get = (container.get(probe) or {}).get("httpGet") or {}
        assert get.get("path") == want and get.get("port") in ("http", port), (
            f"{what}: {probe} must be httpGet {want} on the http port, got {get}"
        )
    svc_path, svc = k8s_by_kind(k8s, "Service")[service]
    assert any(
        p.get("port") == port and p.get("targetPort", p.get("port")) in ("http", port)
        for p in svc["spec"].get("ports") or []
    ), f"{svc_path}: Service {service!r} does not expose HTTP port {port}"


@pytest.mark.parametrize("service", ["inference", "retraining"])
def test_k8s_artifact_volume(k8s, service):
    pvcs = k8s_by_kind(k8s, "PersistentVolumeClaim")
    assert ARTIFACTS_CLAIM in pvcs, f"{rel(K8S_DIR)}: no PersistentVolumeClaim {ARTIFACTS_CLAIM!r}"
    pvc_path, pvc = pvcs[ARTIFACTS_CLAIM]
    assert "ReadWriteMany" in pvc["spec"].get("accessModes", []), (
        f"{pvc_path}: {ARTIFACTS_CLAIM!r} must be ReadWriteMany (inference and "
        f"retraining pods may run on different nodes)"
    )
    path, dep = k8s_by_kind(k8s, "Deployment")[service]
    pod = dep["spec"]["template"]["spec"]
    claims = {
        v["name"]
        for v in pod.get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName") == ARTIFACTS_CLAIM
    }
    mounted = {m["name"] for m in only_container(path, dep).get("volumeMounts") or []}
    assert claims & mounted, f"{path}: Deployment {service!r} does not mount PVC {ARTIFACTS_CLAIM!r}"


def test_k8s_retraining_is_a_single_writer(k8s):
    path, dep = k8s_by_kind(k8s, "Deployment")["retraining"]
    assert dep["spec"].get("replicas") == 1, (
        f"{path}: Deployment 'retraining' must have replicas: 1 (single model writer)"
    )


def test_k8s_single_instance_services_match_the_runner(k8s):
    """What `driftloop up --replicas` refuses to scale runs as one replica in k8s too."""
    from driftloop.runner import SCALABLE_SERVICES
    from driftloop.shared.settings import SERVICES

    deployments = k8s_by_kind(k8s, "Deployment")
    for service in SERVICES:
        path, dep = deployments[service]
        if service not in SCALABLE_SERVICES:
            assert dep["spec"].get("replicas") == 1, f"{path}: {service} runs as exactly one instance"
        env = {e["name"]: e for c in dep["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        field = env["DRIFTLOOP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.name", f"{path}: the static member's id must be the pod's name"


def test_k8s_topics_job(k8s):
    jobs = k8s_by_kind(k8s, "Job")
    topics = {
        name: (path, job) for name, (path, job) in jobs.items() if only_container(path, job).get("args") == ["topics"]
    }
    assert len(topics) == 1, (
        f"{rel(K8S_DIR)}: expected one Job with args ['topics'], found {sorted(topics)} among Jobs {sorted(jobs)}"
    )
    ((name, (path, job)),) = topics.items()
    container = only_container(path, job)
    assert "command" not in container, f"{path}: Job {name!r}: `command` would replace the `driftloop` entrypoint"
    assert container.get("image") == IMAGE, f"{path}: Job {name!r} must use {IMAGE!r}"
    unknown = set(k8s_env(k8s, path, container)) - COMMON_ENV
    assert not unknown, f"{path}: Job {name!r} sets {sorted(unknown)}, which `driftloop topics` does not read"


def secret_sources(k8s, container: dict[str, Any]) -> dict[str, str]:
    """Secret variable -> where the container gets it ('Secret', 'ConfigMap' or 'literal')."""
    configmaps, secrets = k8s_by_kind(k8s, "ConfigMap"), k8s_by_kind(k8s, "Secret")
    found: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            obj, kind = configmaps.get(source["configMapRef"]["name"]), "ConfigMap"
        else:
            obj, kind = secrets.get(source["secretRef"]["name"]), "Secret"
        data = obj[1] if obj else {}
        for key in {**(data.get("data") or {}), **(data.get("stringData") or {})}:
            found[source.get("prefix", "") + key] = kind
    for item in container.get("env") or []:
        ref = item.get("valueFrom") or {}
        found[item["name"]] = (
            "Secret" if "secretKeyRef" in ref else "ConfigMap" if "configMapKeyRef" in ref else "literal"
        )
    return {k: v for k, v in found.items() if k in secret_env_names()}


def test_k8s_configmaps_hold_no_secrets(k8s):
    for name, (path, cm) in k8s_by_kind(k8s, "ConfigMap").items():
        leaked = set(cm.get("data") or {}) & secret_env_names()
        assert not leaked, f"{path}: ConfigMap {name!r} holds {sorted(leaked)}; secrets belong in a Secret"


def test_k8s_secret_is_defined_with_every_secret_variable(k8s):
    secrets = k8s_by_kind(k8s, "Secret")
    assert secrets, f"{rel(K8S_DIR)}: no Secret"
    keys = {k for _, s in secrets.values() for k in {**(s.get("data") or {}), **(s.get("stringData") or {})}}
    assert secret_env_names() <= keys, f"{rel(K8S_DIR)}: no Secret provides {sorted(secret_env_names() - keys)}"


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_k8s_every_workload_gets_its_secrets_from_a_secret(k8s, kind):
    for name, (path, obj) in k8s_by_kind(k8s, kind).items():
        sources = secret_sources(k8s, only_container(path, obj))
        assert set(sources) == secret_env_names(), (
            f"{path}: {kind} {name!r} gets {sorted(sources)} of the secret variables {sorted(secret_env_names())}"
        )
        wrong = {k: v for k, v in sources.items() if v != "Secret"}
        assert not wrong, f"{path}: {kind} {name!r} takes secrets from elsewhere than a Secret: {wrong}"


# --------------------------------------------------------------------------- CLI


def test_cli_parses_the_deployed_commands():
    from driftloop.cli import build_parser

    for argv in [["topics"], *(["run", name] for name in SERVICES)]:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"driftloop/cli.py: build_parser() rejects {argv} (exit {exc.code})")


def test_cli_rejects_an_unknown_service(capsys):
    from driftloop.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "no-such-service"])
    assert exc.value.code != 0, "driftloop/cli.py: `run no-such-service` must be an error"
    capsys.readouterr()  # swallow argparse's usage message


def test_compose_kafka_runs_the_version_the_tests_run(compose):
    """docker-compose's Apache Kafka is the version the pom pins for local runs and tests."""
    from driftloop.shared.broker import kafka_version

    image = compose["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}", (
        f"{rel(COMPOSE_FILE)}: kafka image {image!r}; "
        f"the tests run Apache Kafka {kafka_version()} (shared/jars/pom.xml)"
    )


# --------------------------------------------------------------------------- compose: the cluster profile

CLUSTER_PROFILE = "cluster"
# What the profile's brokers must be configured with: every topic on three nodes, internal
# ones included, and a write with acks=all taken only with two replicas in sync.
CLUSTER_REPLICATION = {
    "KAFKA_DEFAULT_REPLICATION_FACTOR": "3",
    "KAFKA_MIN_INSYNC_REPLICAS": "2",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2",
}


def cluster_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of the cluster profile."""
    return {n: s for n, s in compose["services"].items() if CLUSTER_PROFILE in (s.get("profiles") or [])}


def parse_listeners(value: str | None) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)} (an empty host binds every interface)."""
    out: dict[str, tuple[str, int]] = {}
    for item in (value or "").split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def node_ids(compose: dict[str, Any]) -> dict[int, str]:
    """KAFKA_NODE_ID -> the cluster node's service name."""
    ids: dict[int, str] = {}
    for name, svc in cluster_nodes(compose).items():
        node_id = int(compose_env(name, svc)["KAFKA_NODE_ID"] or 0)
        assert node_id not in ids, f"{rel(COMPOSE_FILE)}: {name!r} and {ids.get(node_id)!r} share node id {node_id}"
        ids[node_id] = name
    return ids


def advertised(name: str, svc: dict[str, Any]) -> tuple[str, int]:
    """The address a node advertises on its inter-broker listener (what containers dial)."""
    env = compose_env(name, svc)
    return parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS"))[str(env.get("KAFKA_INTER_BROKER_LISTENER_NAME"))]


def test_compose_cluster_profile_is_three_kafka_nodes_of_the_pinned_version(compose):
    from driftloop.shared.broker import kafka_version

    nodes = cluster_nodes(compose)
    assert len(nodes) == 3, f"{rel(COMPOSE_FILE)}: profile {CLUSTER_PROFILE!r} runs {sorted(nodes)}, expected 3 nodes"
    for name, svc in nodes.items():
        assert svc.get("image") == f"apache/kafka:{kafka_version()}" == compose["services"]["kafka"]["image"], (
            f"{rel(COMPOSE_FILE)}: {name!r} runs {svc.get('image')!r}; the tests run Apache Kafka {kafka_version()}"
        )
        roles = set(str(compose_env(name, svc).get("KAFKA_PROCESS_ROLES")).split(","))
        assert roles == {"broker", "controller"}, f"{rel(COMPOSE_FILE)}: {name!r} has roles {sorted(roles)}"
    assert not set(nodes) & set(SERVICES), "the driftloop services run in every profile"


def test_compose_cluster_replicates_three_times_with_two_in_sync(compose):
    for name, svc in cluster_nodes(compose).items():
        env = compose_env(name, svc)
        got = {k: env.get(k) for k in CLUSTER_REPLICATION}
        assert got == CLUSTER_REPLICATION, f"{rel(COMPOSE_FILE)}: {name!r} sets {got}"


def test_compose_cluster_voters_are_its_nodes_on_their_controller_listeners(compose):
    import base64

    nodes, ids = cluster_nodes(compose), node_ids(compose)
    envs = {name: compose_env(name, svc) for name, svc in nodes.items()}
    voters = {str(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS")) for env in envs.values()}
    assert len(voters) == 1, f"{rel(COMPOSE_FILE)}: the nodes name different voters: {sorted(voters)}"
    cluster_ids = {str(env.get("CLUSTER_ID")) for env in envs.values()}
    assert len(cluster_ids) == 1, f"{rel(COMPOSE_FILE)}: the nodes are formatted with different CLUSTER_IDs"
    assert len(base64.urlsafe_b64decode(cluster_ids.pop() + "==")) == 16, "a CLUSTER_ID is 16 bytes in base64"
    parsed = {int(v.split("@")[0]): v.split("@")[1].rsplit(":", 1) for v in voters.pop().split(",")}
    assert set(parsed) == set(ids), f"{rel(COMPOSE_FILE)}: voters {sorted(parsed)}, node ids {sorted(ids)}"
    for node_id, (host, port) in parsed.items():
        name = ids[node_id]
        env, where = envs[name], f"{rel(COMPOSE_FILE)}: voter {node_id}@{host}:{port}"
        assert host in (name, nodes[name].get("hostname")), f"{where} is not the address of {name!r}"
        controller = str(env.get("KAFKA_CONTROLLER_LISTENER_NAMES")).split(",")[0]
        listeners = parse_listeners(env.get("KAFKA_LISTENERS"))
        assert listeners.get(controller, ("", -1))[1] == int(port), f"{where}: {name!r} listens with {listeners}"
        assert controller not in parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS")), f"{name!r} advertises it"
        protocols = {p.split(":")[0] for p in str(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")).split(",")}
        assert set(listeners) <= protocols, f"{rel(COMPOSE_FILE)}: {name!r} maps no protocol to some listener"
        inter = (host, listeners[str(env["KAFKA_INTER_BROKER_LISTENER_NAME"])][1])
        assert advertised(name, nodes[name]) == inter, f"{rel(COMPOSE_FILE)}: {name!r} does not advertise {inter}"


def test_compose_cluster_nodes_are_reachable_from_the_host_on_ports_of_their_own(compose):
    published: dict[int, str] = {}
    for name, svc in [("kafka", compose["services"]["kafka"]), *cluster_nodes(compose).items()]:
        env = compose_env(name, svc)
        host_listeners = [
            a for a in parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS")).values() if a[0] == "localhost"
        ]
        assert len(host_listeners) == 1, f"{rel(COMPOSE_FILE)}: {name!r} advertises no single localhost listener"
        port = host_listeners[0][1]
        assert port in compose_container_ports(svc), f"{rel(COMPOSE_FILE)}: {name!r} does not publish port {port}"
        assert port not in published, f"{rel(COMPOSE_FILE)}: {name!r} and {published.get(port)!r} share port {port}"
        published[port] = name


def test_compose_services_can_point_at_the_cluster(compose):
    """The driftloop containers' bootstrap and replication factor default to the single node,
    and the command the file documents for the profile names every node and replication 3;
    the topics step waits for the profile's nodes when they run."""
    env = compose_env("topics", compose["services"]["topics"])
    bootstrap = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", str(env.get("KAFKA_BOOTSTRAP_SERVERS")))
    assert bootstrap, f"{rel(COMPOSE_FILE)}: KAFKA_BOOTSTRAP_SERVERS is not ${{VARIABLE:-default}}"
    host, port = advertised("kafka", compose["services"]["kafka"])
    assert bootstrap.group(2) == f"{host}:{port}", "the default is not the single node"
    assert env.get("DRIFTLOOP_REPLICATION_FACTOR") == "${DRIFTLOOP_REPLICATION_FACTOR:-1}"
    documented = re.search(rf"{bootstrap.group(1)}=(\S+) DRIFTLOOP_REPLICATION_FACTOR=3\b", COMPOSE_FILE.read_text())
    assert documented, f"{rel(COMPOSE_FILE)}: no documented command sets {bootstrap.group(1)} for the cluster profile"
    ids, nodes = node_ids(compose), cluster_nodes(compose)
    expected = ",".join("{}:{}".format(*advertised(ids[i], nodes[ids[i]])) for i in sorted(ids))
    assert documented.group(1) == expected, f"{rel(COMPOSE_FILE)}: the documented bootstrap is not {expected}"
    deps = compose["services"]["topics"].get("depends_on") or {}
    for name in nodes:
        assert deps.get(name) == {"condition": "service_healthy", "required": False}, (
            f"{rel(COMPOSE_FILE)}: topics must wait for {name!r} to be healthy, when the profile runs it"
        )

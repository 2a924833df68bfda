"""The shipped systemd unit and Kubernetes configuration are valid as shipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskwarden.config import load_settings
from taskwarden.wiring import build_alerting

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "daemon" / "taskwarden"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "taskwarden.service").read_text()
    for required in (
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=taskwarden",
        "LoadCredential=",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
        "WatchdogSec=",
        "IPAddressDeny=",
        "MemoryDenyWriteExecute=yes",
        "PrivateUsers=yes",
        "ProcSubset=pid",
    ):
        assert required in unit, required
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    entry = Path(sys.executable).parent / "taskwarden"
    installed = tmp_path / "taskwarden.service"
    installed.write_text(unit.replace("/opt/taskwarden/bin/taskwarden", str(entry)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(installed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # warnings (unknown keys, bad values) too


KUBE = ROOT / "deploy" / "kubernetes"


def shipped_config(
    configmap_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, Any]]:
    """The ConfigMaps laid out as the pod sees them (config/ and teams/ directories), the
    example Secret as credential files."""
    configmap: dict[str, Any] = yaml.safe_load(configmap_file.read_text())
    teams: dict[str, Any] = yaml.safe_load((KUBE / "base" / "teams-configmap.yaml").read_text())
    (tmp_path / "teams").mkdir()
    for name, text in teams["data"].items():
        (tmp_path / "teams" / name).write_text(text)
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "taskwarden.yaml"
    config.write_text(configmap["data"]["taskwarden.yaml"])
    secret = yaml.safe_load((KUBE / "secret.example.yaml").read_text())
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in secret["stringData"].items():
        (credentials / name).write_text(value)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    return config, configmap


def kustomized(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, followed recursively (the kit uses no patches,
    so this is what `kubectl kustomize` builds; make lint-deploy runs that too)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, "no patches, no generators"
    found: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            found.extend(kustomized(path))
        else:
            found.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return found


def pod_specs(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["spec"]["template"]["spec"] for r in resources if r["kind"] in ("Deployment", "Job")]


def test_kubernetes_configmap_is_a_valid_taskwarden_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = shipped_config(KUBE / "single" / "configmap.yaml", tmp_path, monkeypatch)
    settings = load_settings(config)
    assert settings.daemon.health_bind == "0.0.0.0:9464"
    assert build_alerting(settings, config).teams[0].name == "catalog"
    deployment = yaml.safe_load((KUBE / "single" / "deployment.yaml").read_text())
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    [container] = spec["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])


def test_the_ha_variant_shares_a_database_and_survives_disruptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ha = KUBE / "ha"
    config, configmap = shipped_config(ha / "configmap.yaml", tmp_path, monkeypatch)
    settings = load_settings(config)
    assert settings.state.url is not None
    assert settings.state.url.startswith("postgresql://")
    assert settings.state.password is not None
    assert build_alerting(settings, config).teams[0].name == "catalog"
    deployment, budget = yaml.safe_load_all((ha / "deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    assert all("persistentVolumeClaim" not in v for v in spec["volumes"])
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["volumes"][0]["configMap"]["name"] == configmap["metadata"]["name"]
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@pytest.mark.parametrize("overlay", ["single", "ha"])
def test_the_kustomize_overlays_are_complete_and_safe(overlay: str) -> None:
    resources = kustomized(KUBE / overlay)
    kinds = sorted(r["kind"] for r in resources)
    for kind in ("Deployment", "Service", "ServiceAccount", "ServiceMonitor", "PrometheusRule",
                 "NetworkPolicy"):  # fmt: skip
        assert kind in kinds, kind
    assert "Secret" not in kinds  # created once by the operator: `apply -k` never overwrites it
    assert ("PersistentVolumeClaim" in kinds) == (overlay == "single")
    assert ("PodDisruptionBudget" in kinds) == (overlay == "ha")
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    assert len(names) == len(resources), "one resource per kind and name"
    configmaps = {name for kind, name in names if kind == "ConfigMap"}
    for spec in pod_specs(resources):
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == "taskwarden"
        mounted = {v["name"]: v for v in spec["volumes"]}
        for volume in mounted.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
        for container in spec["containers"]:
            for mount in container["volumeMounts"]:
                # subPath freezes a file: a ConfigMap edit would never reach the pod.
                assert "subPath" not in mount, mount
                assert mount["name"] in mounted
    [service] = [r for r in resources if r["kind"] == "Service"]
    [monitor] = [r for r in resources if r["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_prometheus_rule_resource_carries_the_checked_rules() -> None:
    """The rules promtool checks and unit-tests are the ones the PrometheusRule ships."""
    checked = yaml.safe_load((ROOT / "deploy" / "prometheus" / "taskwarden-rules.yaml").read_text())
    shipped = yaml.safe_load((KUBE / "base" / "prometheusrule.yaml").read_text())
    assert shipped["spec"] == checked


def test_the_grafana_dashboard_queries_real_metrics_in_valid_promql(tmp_path: Path) -> None:
    """Every panel's query names metrics taskwarden exports, and promtool parses it."""
    import json
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "taskwarden.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    exported = set(
        re.findall(r'"(taskwarden_[a-z_]+)"', (PACKAGE / "service" / "metrics.py").read_text())
    )
    for expr in exprs:
        for name in re.findall(r"taskwarden_[a-z_]+", expr):
            family = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert family in exported, f"{name} in {expr!r}"
    # promtool parses PromQL in rule files: one recording rule per query.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool is not None, "make system-deps installs Debian's prometheus (promtool)"
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_exposure_stays_low(tmp_path: Path) -> None:
    """systemd-analyze security's exposure (0 best, 10 worst): the README quotes it."""
    import re

    unit = tmp_path / "taskwarden.service"
    unit.write_text((ROOT / "systemd" / "taskwarden.service").read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for taskwarden.service: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 1.1


def test_the_image_ships_the_locked_versions_the_tests_ran_on() -> None:
    """requirements.lock pins every runtime dependency with its hashes; the image installs
    it with --require-hashes; this venv (make test's) has exactly those versions."""
    import re
    import tomllib
    from importlib.metadata import version

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    lock = (ROOT / "requirements.lock").read_text()
    pinned = {
        normal(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE)
    }
    entries = re.split(r"\n(?=[A-Za-z])", lock.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = normal(re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0])
        assert name in pinned, f"{name} is not in requirements.lock: run make lock"
    for name, locked in pinned.items():
        assert version(name) == locked, f"{name}: venv {version(name)}, lock {locked}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "-r requirements.lock" in dockerfile
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["${PYTHON_IMAGE}"] * 2

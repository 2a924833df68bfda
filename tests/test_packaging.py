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


def shipped_config(
    configmap_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, Any]]:
    """The ConfigMap's configuration and team file on disk, the Secret as credential files."""
    configmap: dict[str, Any] = yaml.safe_load(configmap_file.read_text())
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "catalog.yaml").write_text(configmap["data"]["catalog.yaml"])
    config = tmp_path / "taskwarden.yaml"
    config.write_text(configmap["data"]["taskwarden.yaml"])
    secret = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "secret.yaml").read_text())
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in secret["stringData"].items():
        (credentials / name).write_text(value)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    return config, configmap


def test_kubernetes_configmap_is_a_valid_taskwarden_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = shipped_config(
        ROOT / "deploy" / "kubernetes" / "configmap.yaml", tmp_path, monkeypatch
    )
    settings = load_settings(config)
    assert settings.daemon.health_bind == "0.0.0.0:9464"
    assert build_alerting(settings, config).teams[0].name == "catalog"
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
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
    ha = ROOT / "deploy" / "kubernetes" / "ha"
    config, configmap = shipped_config(ha / "configmap.yaml", tmp_path, monkeypatch)
    settings = load_settings(config)
    assert settings.state.url is not None
    assert settings.state.url.startswith("postgresql://")
    assert settings.state.password is not None
    deployment, budget = yaml.safe_load_all((ha / "deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    assert all("persistentVolumeClaim" not in v for v in spec["volumes"])
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["volumes"][0]["configMap"]["name"] == configmap["metadata"]["name"]
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]

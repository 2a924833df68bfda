from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.config import load_settings
from taskwarden.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taskwarden.yaml"
    path.write_text(text)
    return path


def test_yaml_durations_and_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path, "sources:\n  dr_eu:\n    interval: 90s\n    overlap: 2m\n    retention: 14d\n"
    )
    source = load_settings(config).sources["dr_eu"]
    assert source.interval == timedelta(seconds=90)
    assert source.overlap == timedelta(minutes=2)
    assert source.retention == timedelta(days=14)
    assert source.initial_lookback == timedelta(hours=24)


def test_durations_as_alertmanager_users_write_them(tmp_path: Path) -> None:
    config = write(
        tmp_path, "sources:\n  dr:\n    interval: 1m30s\n    retention: 1d12h\n    overlap: 1.5m\n"
    )
    source = load_settings(config).sources["dr"]
    assert source.interval == timedelta(seconds=90)
    assert source.retention == timedelta(hours=36)
    assert source.overlap == timedelta(seconds=90)
    with pytest.raises(ConfigError, match="'1h30' is not a duration such as"):
        load_settings(write(tmp_path, "sources:\n  dr:\n    interval: 1h30\n"))


def test_secrets_from_env_secret_files_and_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "sources:\n  dr:\n    auth: bearer\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sources__dr__api_key").write_text("from-credential-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    key = load_settings(config).sources["dr"].api_key
    assert key is not None
    assert key.get_secret_value() == "from-credential-file"
    monkeypatch.setenv("TASKWARDEN_SOURCES__DR__API_KEY", "from-env")
    settings = load_settings(config)
    assert settings.sources["dr"].api_key.get_secret_value() == "from-env"  # type: ignore[union-attr]
    assert "from-env" not in repr(settings)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "sources:\n  dr:\n    interval: soon\n    base_url: ftp://x\n    colour: blue\n"
        "    retentoin: 2d\n  Bad-Name: {}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert str(config) in message
    assert "sources.dr.interval (line 3): 'soon' is not a duration" in message
    assert "sources.dr.base_url (line 4)" in message
    assert "sources.dr.colour (line 5): not a setting here\n" in message
    assert "sources.dr.retentoin (line 6): not a setting here; did you mean 'retention'?" in message
    assert "Bad-Name" in message


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"taskwarden.yaml:2: expected ',' or ']'"):
        load_settings(write(tmp_path, "sources: [unclosed\n"))


def test_the_shipped_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from taskwarden.wiring import build_alerting, build_notifiers

    monkeypatch.setenv("TASKWARDEN_RECEIVERS__CATALOG_SLACK__SLACK__TOKEN", "xoxb-1")
    monkeypatch.setenv("TASKWARDEN_SOURCES__EP_STORE__CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__PRICING_SLACK__SLACK__WEBHOOK_URL", "https://h/1")
    example = Path(__file__).parents[1] / "config" / "taskwarden.example.yaml"
    settings = load_settings(example)
    assert settings.sources["dr_prod"].interval == timedelta(seconds=60)
    alerting = build_alerting(settings, example)
    assert [t.name for t in alerting.teams] == ["catalog", "pricing"]
    assert set(build_notifiers(settings)) == {"catalog_slack", "pricing_slack", "ops_mail"}
    assert settings.receivers["catalog_slack"].slack is not None
    assert settings.sources["ep_store"].kind == "elasticpath"

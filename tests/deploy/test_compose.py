"""deploy/docker-compose.yml (issue 11 item 3): valid for the compose tool and against the
Compose Specification's JSON schema, the production topology, secrets as files that
deploy/make-secrets.sh generates and Keel's production checks accept."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.conftest import ensure_tool
from tests.deploy.dockerfile import stages

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
APPS = ("app1", "app2")
STORES = ("redis", "postgres", "mongo", "openbao")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))  # the x-keel anchor merged into app1/app2


@pytest.fixture(scope="module")
def docker_compose() -> str:
    return ensure_tool("docker-compose", "docker-compose")


def test_the_compose_tool_accepts_it(docker_compose: str, tmp_path: Path) -> None:
    result = subprocess.run([docker_compose, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            cwd=tmp_path, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    # and the tool does validate: a misspelt key is refused
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE.read_text().replace("start_period:", "start_perod:"))
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("secrets"))
    result = subprocess.run([docker_compose, "-f", str(bad), "config", "-q"], capture_output=True, text=True,
                            cwd=tmp_path, check=False, timeout=60)
    assert result.returncode != 0 and "start_perod" in result.stderr, result.stderr


def test_it_matches_the_compose_specification_schema(docker_compose: str, compose: dict[str, Any]) -> None:
    """The Compose Specification's JSON schema, as the installed compose tool ships it."""
    import jsonschema

    interpreter = Path(docker_compose).read_text().splitlines()[0].removeprefix("#!").split()
    locate = "import compose.config, os; print(os.path.dirname(compose.config.__file__))"
    where = subprocess.run([*interpreter, "-c", locate], capture_output=True, text=True, check=True).stdout.strip()
    schema = json.loads((Path(where) / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(yaml.safe_load(COMPOSE.read_text())), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    # the schema is not vacuous
    assert list(validator.iter_errors({"services": {"x": {"healthcheck": {"intervl": "1s"}}}}))


def test_topology_two_instances_behind_nginx_with_every_store(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"nginx", *APPS, *STORES}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    # nginx alone publishes a port; the data stores are on the internal network only
    assert [name for name, s in services.items() if s.get("ports")] == ["nginx"]
    assert compose["networks"]["backend"]["internal"] is True
    for store in STORES:
        assert services[store]["networks"] == ["backend"], store
    assert services["nginx"]["networks"] == ["frontend"]
    assert set(services["nginx"]["depends_on"]) == set(APPS)
    for app in APPS:
        service = services[app]
        assert set(service["networks"]) == {"frontend", "backend"}
        conditions = {dep: c["condition"] for dep, c in service["depends_on"].items()}
        assert conditions == dict.fromkeys(STORES, "service_healthy")
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert service["environment"]["APP_ENV"] == "production"
        assert service["healthcheck"]["test"] == ["CMD", *stages(ROOT / "Dockerfile")[-1].exec_form("HEALTHCHECK")]
        assert service["build"]["context"] == ".." and service["build"]["dockerfile"] == "Dockerfile"
        assert "ARG WHEELHOUSE=wheelhouse" in (ROOT / "Dockerfile").read_text()
        assert service["build"]["args"]["WHEELHOUSE"] == "wheelhouse"


def test_secrets_are_files_never_environment_values(compose: dict[str, Any]) -> None:
    from config.schema import SETTINGS

    secret_keys = {s.key for s in SETTINGS if s.secret}
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert not key.endswith("_PASSWORD"), f"{name}: {key} in the environment; use a *_FILE secret"
            if key in secret_keys:
                assert "@" not in str(value), f"{name}: {key} carries credentials in the environment"
    assert compose["services"]["app1"]["environment"].keys().isdisjoint(
        {"JWT_SECRET_KEY", "API_KEY_PEPPER", "ENCRYPTION_KEYS", "DATABASE_URL", "MONGODB_URL", "VAULT_TOKEN"})
    declared = compose["secrets"]
    assert all(spec == {"file": f"./secrets/{name}"} for name, spec in declared.items()), declared
    used = {s for service in compose["services"].values() for s in service.get("secrets", [])}
    assert used == set(declared)


def test_make_secrets_writes_what_compose_mounts_and_production_accepts(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """``sh deploy/make-secrets.sh DIR`` writes every secret file the compose file mounts; the
    app's secrets, read from there, pass Keel's production checks; re-running keeps them."""
    from config import check_production, load_settings

    out = tmp_path / "secrets"
    subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(out)], check=True, capture_output=True)
    assert {p.name for p in out.iterdir()} == set(compose["secrets"])
    assert out.stat().st_mode & 0o777 == 0o700
    first = {p.name: p.read_text() for p in out.iterdir()}
    subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(out)], check=True, capture_output=True)
    assert {p.name: p.read_text() for p in out.iterdir()} == first
    password = first["postgres_password"]
    assert first["database_url"] == f"postgresql://keel:{password}@postgres:5432/keel"
    assert f":{first['mongo_password']}@mongo:27017/" in first["mongodb_url"]

    app_env = {k: str(v).replace("${KEEL_HOST:-localhost}", "localhost")
               for k, v in compose["services"]["app1"]["environment"].items()}
    settings = load_settings(env={**app_env, "SECRETS_DIR": str(out)})  # Vault not asked (no factory)
    check_production(settings)  # raises on a missing, short or development key
    assert settings.is_production
    for key in ("JWT_SECRET_KEY", "API_KEY_PEPPER", "ENCRYPTION_KEYS", "DATABASE_URL", "MONGODB_URL", "VAULT_TOKEN"):
        assert settings.source(key) == f"file:{out / key.lower()}", key

"""docker-compose files: valid against the Compose spec, and the promised services and wiring."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SPEC = json.loads((Path(__file__).parent / "data" / "compose_spec.json").read_text())


def _load(name):
    return yaml.safe_load((ROOT / name).read_text())


MILVUS_INFRA = ("etcd", "minio", "milvus")


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_file_is_valid_against_the_spec(name):
    jsonschema.validate(_load(name), SPEC)


def test_gpu_stack_wiring():
    services = _load("docker-compose.yml")["services"]
    assert set(services) == {"train", "index", "api", *MILVUS_INFRA, "index-milvus", "api-milvus"}
    assert services["train"]["profiles"] == ["train"]
    assert services["api"]["depends_on"]["index"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert any(p.endswith(":8000") for p in services["api"]["ports"])
    for name in ("index-milvus", "api-milvus"):  # the milvus profile: built into and served from Milvus
        assert services[name]["profiles"] == ["milvus"]
        assert services[name]["environment"]["CIR_STORE"] == "milvus://milvus:19530/gallery"
    assert services["index-milvus"]["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert services["api-milvus"]["depends_on"]["index-milvus"]["condition"] == "service_completed_successfully"
    assert all(services[name]["profiles"] == ["milvus"] and "deploy" not in services[name] for name in MILVUS_INFRA)
    for svc in (s for name, s in services.items() if name not in MILVUS_INFRA):
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert {"models:/models", "data:/data", "hf-cache:/cache/hf"} <= set(svc["volumes"])


def test_cpu_variant_matches_gpu_stack_without_gpu():
    gpu, cpu = _load("docker-compose.yml")["services"], _load("docker-compose.cpu.yml")["services"]
    assert set(gpu) == set(cpu)
    for name in gpu:
        assert "deploy" not in cpu[name]
        if name in MILVUS_INFRA:  # Milvus's own images: the same in both files
            assert gpu[name] == cpu[name]
            continue
        assert "Dockerfile.cpu" in cpu[name]["build"]["dockerfile"]
        assert {k: v for k, v in gpu[name].items() if k not in ("deploy", "image", "build", "environment")} == \
               {k: v for k, v in cpu[name].items() if k not in ("image", "build", "environment")}
        assert set(gpu[name]["environment"]) == set(cpu[name]["environment"])
        same = {k: v for k, v in gpu[name]["environment"].items() if k != "CIR_DEVICE"}
        assert same == {k: v for k, v in cpu[name]["environment"].items() if k != "CIR_DEVICE"}


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_cli_accepts_the_file(name):
    if shutil.which("docker-compose"):
        cmd = ["docker-compose", "-f", name, "config", "-q"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose", "-f", name, "config", "-q"]
    else:
        pytest.skip("no docker compose CLI installed (the schema test above still validates the file)")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- the effective environment of each container ------------------------------------------

JOBS_SH = ROOT / "docker" / "jobs.sh"
# Fixed by the image, deliberately not passed through: container paths, and the listening
# address (the container listens on 0.0.0.0:8000; CIR_PORT on the host picks the published port).
NOT_PASSED = {"CIR_HOST", "CIR_PORT", "CIR_INDEX", "CIR_WORLD_DIR", "CIR_ADAPTER_DIR", "CIR_THUMB_CACHE"}
FILES = ["docker-compose.yml", "docker-compose.cpu.yml"]


def _entry_point_vars() -> set[str]:
    return set(re.findall(r"\$\{?(CIR_[A-Z0-9_]+)", JOBS_SH.read_text())) - NOT_PASSED


def _settings_vars() -> set[str]:
    return {f"CIR_{name.upper()}" for name in Settings.model_fields} - NOT_PASSED


def _expected(service: str) -> set[str]:
    wanted = _entry_point_vars() | {"HF_TOKEN"}
    return wanted | _settings_vars() if service == "api" else wanted


def _compose_config(name: str, env: dict[str, str], tmp_path: Path) -> dict:
    """`docker-compose config` of a file: the environment each service really gets."""
    if shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    else:
        pytest.skip("no docker compose CLI installed")
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    env_file = tmp_path / "empty.env"  # so a developer's own .env changes nothing
    env_file.write_text("")
    result = subprocess.run([*cmd, "--env-file", str(env_file), "-f", name, "config"], cwd=ROOT, env=clean,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_the_variables_the_containers_read_are_known():
    assert {"CIR_MODEL", "CIR_GALLERY", "CIR_DEFAULT_ALPHA", "CIR_TRAIN_ARGS"} <= _entry_point_vars()
    assert {"CIR_API_KEY", "CIR_MAX_BATCH", "CIR_DEFAULT_ALPHA", "CIR_RELOAD_INTERVAL_S"} <= _settings_vars()


@pytest.mark.parametrize("name", FILES)
def test_every_service_gets_the_variables_it_reads(name):
    """From the YAML with anchors and merge keys resolved."""
    for service, spec in _load(name)["services"].items():
        if service in MILVUS_INFRA:
            continue  # Milvus's own images read their own variables
        env = spec["environment"]
        assert set(env) >= _expected(service), (service, _expected(service) - set(env))
        assert not set(env) & NOT_PASSED, service
    services = _load(name)["services"]
    assert "CIR_API_KEY" not in services["index"]["environment"]  # the key goes where it is checked only


@pytest.mark.parametrize("name", FILES)
def test_compose_passes_the_host_environment_through(name, tmp_path):
    """What `docker-compose config` resolves: HF_TOKEN reaches the api, CIR_DEFAULT_ALPHA every job."""
    given = {"HF_TOKEN": "hf_secret", "CIR_DEFAULT_ALPHA": "0.6", "CIR_MAX_BATCH": "7", "CIR_API_KEY": "k"}
    services = _compose_config(name, given, tmp_path)
    for service, spec in services.items():
        env = spec["environment"]
        assert set(env) >= _expected(service), (service, _expected(service) - set(env))
        assert env["HF_TOKEN"] == "hf_secret" and env["CIR_DEFAULT_ALPHA"] == "0.6", service
    assert services["api"]["environment"]["CIR_MAX_BATCH"] == "7"
    assert services["api"]["environment"]["CIR_API_KEY"] == "k"


@pytest.mark.parametrize("name", FILES)
def test_the_api_environment_with_nothing_set_is_valid_settings(name, monkeypatch, tmp_path):
    """Unset host variables arrive as empty strings: the service takes them as 'not set'."""
    env = _compose_config(name, {}, tmp_path)["api"]["environment"]
    for key in list(os.environ):
        if key.startswith("CIR_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, "" if value is None else str(value))
    settings = Settings()
    assert settings.max_batch == Settings.model_fields["max_batch"].default
    assert settings.api_key is None and settings.default_alpha is None and settings.reload_interval_s == 5

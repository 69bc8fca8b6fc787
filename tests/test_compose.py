"""docker-compose files: valid against the Compose spec, and the promised services and wiring."""

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = json.loads((Path(__file__).parent / "data" / "compose_spec.json").read_text())


def _load(name):
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_file_is_valid_against_the_spec(name):
    jsonschema.validate(_load(name), SPEC)


def test_gpu_stack_wiring():
    services = _load("docker-compose.yml")["services"]
    assert set(services) == {"train", "index", "api"}
    assert services["train"]["profiles"] == ["train"]
    assert services["api"]["depends_on"]["index"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert any(p.endswith(":8000") for p in services["api"]["ports"])
    for svc in services.values():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert {"models:/models", "data:/data", "hf-cache:/cache/hf"} <= set(svc["volumes"])


def test_cpu_variant_matches_gpu_stack_without_gpu():
    gpu, cpu = _load("docker-compose.yml")["services"], _load("docker-compose.cpu.yml")["services"]
    assert set(gpu) == set(cpu)
    for name in gpu:
        assert "deploy" not in cpu[name]
        assert "Dockerfile.cpu" in cpu[name]["build"]["dockerfile"]
        assert {k: v for k, v in gpu[name].items() if k not in ("deploy", "image", "build", "environment")} == \
               {k: v for k, v in cpu[name].items() if k not in ("image", "build", "environment")}


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

"""cluster.yaml, checked offline the way `ray up` starts (prepare_config, then validate_config
against the installed Ray's schema), plus the project's own rules for it. The AWS half of
`ray up` (boto3: AMI, key pair, security group, launch) needs an account and is not run."""

from __future__ import annotations

import copy
import re
import shlex
import socket
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: validation must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during offline validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def raw() -> dict:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


@pytest.fixture
def prepared(raw: dict, no_network: None) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _gpu_types(config: dict) -> dict[str, dict]:
    return {name: t for name, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


def _ray_start_flags(command: str) -> dict[str, str]:
    args = shlex.split(command.split(";")[-1])
    assert args[:2] == ["ray", "start"], command
    return dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), "")
                for a in args[2:])


def test_validates_offline_against_the_installed_schema(prepared: dict) -> None:
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_check_has_teeth(raw: dict, no_network: None) -> None:
    broken = copy.deepcopy(raw)
    broken["idle_timeout_minute"] = broken.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        validate_config(prepare_config(broken))


def test_image_is_the_ray_the_project_runs(prepared: dict) -> None:
    image = prepared["docker"]["image"]
    assert image == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert not {"head_image", "worker_image"} & prepared["docker"].keys()
    py = re.search(r"-py3(\d+)-", image).group(1)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"3.{py}" in SpecifierSet(requires), f"image Python 3.{py} vs requires-python {requires}"


def test_gpu_workers_autoscale_from_zero(prepared: dict) -> None:
    assert prepared["idle_timeout_minutes"] > 0
    gpu_types = _gpu_types(prepared)
    assert gpu_types, "no worker type offers a GPU"
    for name, t in gpu_types.items():
        assert name != prepared["head_node_type"]
        assert t["min_workers"] == 0
        assert 0 < t["max_workers"] <= prepared["max_workers"]
        assert "--gpus all" in t["docker"]["worker_run_options"]
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")


def test_no_trials_on_the_head(prepared: dict) -> None:
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0


def test_nothing_but_ssh_is_opened(prepared: dict) -> None:
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    assert "security_group" not in prepared["provider"]
    head_start = [c for c in prepared["head_start_ray_commands"] if "ray start" in c]
    assert len(head_start) == 1
    flags = _ray_start_flags(head_start[0])
    assert "head" in flags and flags["autoscaling-config"] == "~/ray_bootstrap_config.yaml"
    assert flags["dashboard-host"] in ("127.0.0.1", "localhost")
    worker_start = [c for c in prepared["worker_start_ray_commands"] if "ray start" in c]
    assert len(worker_start) == 1 and "$RAY_HEAD_IP" in _ray_start_flags(worker_start[0])["address"]


def test_the_project_is_shipped_and_installed_everywhere(prepared: dict) -> None:
    shipped = [remote for remote, local in prepared["file_mounts"].items() if local in (".", "./")]
    assert len(shipped) == 1, "cluster.yaml should mount the repository root (run `ray up` from it)"
    remote = shipped[0]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert project == "pp_cluster"
    install = re.compile(rf"\bpip install (-e |--editable )?{re.escape(remote)}/?(\s|$)")
    # prepare_config merged setup_commands into both lists, as `ray up` does.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any(install.search(c) for c in prepared[key]), f"{key} does not install {remote}"
    assert ".gitignore" in prepared["rsync_filter"]

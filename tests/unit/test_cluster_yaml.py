"""cluster.yaml, checked offline the way `ray up` starts (prepare_config, then validate_config
against the installed Ray's schema), plus the project's own rules for it: token authentication,
SSH from a set CIDR only, least-privilege IAM (the policies documented in docs/cluster.md). The
AWS half of `ray up` (boto3: AMI, key pair, security group, launch) needs an account and is not
run, except for the first, offline step of Ray's security-group code."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
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
from ray.autoscaler._private.aws import config as aws_config
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
CLUSTER_DOC = REPO / "docs" / "cluster.md"
# Ray's default token file (ray._private.authentication.authentication_token_setup), in the
# image's home directory.
CONTAINER_TOKEN = "/home/ray/.ray/auth_token"
# What the head's autoscaler calls (ray/autoscaler/_private/aws/node_provider.py) and nothing more.
HEAD_EC2_ACTIONS = {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:Describe*"}


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


def _ray_start(command: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the environment assignments before `ray start`, its flags)."""
    args = shlex.split(command.split(";")[-1])
    env = {}
    while args and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", args[0]):
        key, value = args.pop(0).split("=", 1)
        env[key] = value
    assert args[:2] == ["ray", "start"], command
    flags = dict(
        a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), "") for a in args[2:]
    )
    return env, flags


def _ray_start_flags(command: str) -> dict[str, str]:
    return _ray_start(command)[1]


def _the_start_command(commands: list[str]) -> str:
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, commands
    return starts[0]


def _doc_policies() -> list[dict]:
    """Every IAM policy document (a JSON block with a Statement) in docs/cluster.md."""
    blocks = re.findall(r"```json\n(.*?)```", CLUSTER_DOC.read_text(), re.S)
    policies = [json.loads(b) for b in blocks]
    return [p for p in policies if isinstance(p, dict) and "Statement" in p]


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _allows(policy: dict) -> list[dict]:
    return [s for s in policy["Statement"] if s["Effect"] == "Allow"]


def _actions(policy: dict) -> set[str]:
    return {a for s in _allows(policy) for a in _listed(s["Action"])}


def _strings(node) -> list[str]:
    """Every key and string value in a loaded YAML document."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(k) + _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _is_world(cidr: str) -> bool:
    return ipaddress.ip_network(cidr, strict=False).prefixlen == 0


def _ingress_ray_would_authorize(config: dict) -> list[dict]:
    """The inbound rules `ray up` adds to the security group it creates, which it does for any
    node type without SecurityGroupIds (aws/config.py: _configure_security_group)."""
    if all("SecurityGroupIds" in t["node_config"] for t in config["available_node_types"].values()):
        return []
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    return aws_config._create_default_inbound_rules(set(), extra)


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


def test_no_trials_on_the_head(prepared: dict) -> None:
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0


def test_dashboard_on_loopback_and_workers_join_the_head(prepared: dict) -> None:
    flags = _ray_start_flags(_the_start_command(prepared["head_start_ray_commands"]))
    assert "head" in flags and flags["autoscaling-config"] == "~/ray_bootstrap_config.yaml"
    assert flags["dashboard-host"] in ("127.0.0.1", "localhost")
    assert (
        "$RAY_HEAD_IP"
        in _ray_start_flags(_the_start_command(prepared["worker_start_ray_commands"]))["address"]
    )


def test_token_authentication_on_every_node(prepared: dict) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        env, _ = _ray_start(_the_start_command(prepared[key]))
        assert env.get("RAY_AUTH_MODE") == "token", f"{key}: `ray start` without RAY_AUTH_MODE=token"
    # Every process in the containers (ray exec/submit, `ray status`, job drivers) too.
    run_options = " ".join(prepared["docker"].get("run_options", []))
    assert re.search(r"(--env[= ]|-e )RAY_AUTH_MODE=token\b", run_options), (
        f"docker.run_options do not set RAY_AUTH_MODE=token in the containers: {run_options!r}"
    )
    for name, t in prepared["available_node_types"].items():
        assert "RAY_AUTH_MODE=disabled" not in " ".join(t.get("docker", {}).get("worker_run_options", [])), (
            name
        )
    # The token reaches head and workers at Ray's default path, from outside the repository.
    local = prepared["file_mounts"].get(CONTAINER_TOKEN)
    assert local, f"file_mounts has no {CONTAINER_TOKEN} (the token for head and workers)"
    local = Path(os.path.expanduser(local)).resolve()
    assert REPO != local and REPO not in local.parents, f"the token would come from the repository: {local}"
    # And no token is written into the file, nor token auth turned off anywhere in it.
    values = _strings(yaml.safe_load(CLUSTER_YAML.read_text()))
    assert not [v for v in values if "RAY_AUTH_TOKEN" in v or "RAY_AUTH_MODE=disabled" in v]


def test_ssh_only_from_a_set_cidr(prepared: dict, no_network: None) -> None:
    # What `ray up` would open (a group it creates always gets SSH from 0.0.0.0/0), and any rule
    # the file adds.
    rules = _ingress_ray_would_authorize(prepared)
    rules += prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + [
            r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])
        ]
        assert not any(_is_world(c) for c in cidrs), f"ingress from anywhere: {rule}"
    for name, t in prepared["available_node_types"].items():
        groups = t["node_config"]["SecurityGroupIds"]
        assert groups and all(re.fullmatch(r"sg-[0-9a-f]{8,17}", g) for g in groups), f"{name}: {groups}"
    # Ray's own code takes the user-defined-groups branch: it returns before any AWS call
    # (network access fails this test) and leaves the groups as they are.
    bootstrapped = aws_config._configure_security_group(copy.deepcopy(prepared))
    assert bootstrapped["available_node_types"] == prepared["available_node_types"]
    values = _strings(yaml.safe_load(CLUSTER_YAML.read_text()))  # comments may name it, values may not
    assert not [v for v in values if "0.0.0.0/0" in v or "::/0" in v]
    # The documented commands that make the group open port 22 only, and only to a set CIDR.
    doc = CLUSTER_DOC.read_text()
    ingress = [line for line in doc.splitlines() if "authorize-security-group-ingress" in line]
    cidr_rules = [line for line in ingress if "--cidr" in line or "CidrIp" in line]
    assert cidr_rules, "docs/cluster.md has no command opening SSH to a CIDR"
    for line in ingress:
        if "--source-group" in line:
            continue
        assert re.search(r"--port 22(\s|$)", line) and "--protocol tcp" in line, line
        for cidr in re.findall(r"(?:--cidr(?:-ipv6)?\s+|CidrIpv?6?=)([0-9a-fA-F:.]+/\d+)", line):
            assert not _is_world(cidr), line
        assert "CHANGE" in line, f"the SSH CIDR is not marked CHANGE: {line}"


def test_head_and_workers_have_their_own_instance_profiles(prepared: dict) -> None:
    arns = {}
    for name, t in prepared["available_node_types"].items():
        profile = t["node_config"].get("IamInstanceProfile", {})
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", profile.get("Arn", "")), (
            f"{name}: no IamInstanceProfile ARN"
            + (
                " (the head would get ray-autoscaler-v1: full EC2 and S3)"
                if name == prepared["head_node_type"]
                else ""
            )
        )
        arns[name] = profile["Arn"]
    head = arns.pop(prepared["head_node_type"])
    assert not head.endswith("/ray-autoscaler-v1")
    assert arns and head not in arns.values(), "workers must not share the head's profile"


def test_documented_policies_are_least_privilege(prepared: dict) -> None:
    policies = _doc_policies()
    trust = [p for p in policies if any("Principal" in s for s in p["Statement"])]
    roles = [p for p in policies if p not in trust]
    for p in trust:
        for s in p["Statement"]:
            assert _listed(s["Action"]) == ["sts:AssumeRole"], s
            assert s["Principal"] == {"Service": "ec2.amazonaws.com"}, s
    heads = [p for p in roles if "ec2:RunInstances" in _actions(p)]
    workers = [p for p in roles if p not in heads]
    assert len(heads) == 1 and workers, "docs/cluster.md should show one head policy and a worker policy"
    buckets = set()
    for p in roles:
        for s in _allows(p):
            actions, resources = _listed(s["Action"]), _listed(s["Resource"])
            for a in actions:
                assert a != "*" and not a.endswith(":*"), f"wildcard action {a}: {s}"
            if any(a.startswith("s3:") for a in actions):
                for r in resources:
                    m = re.fullmatch(r"arn:aws:s3:::([a-zA-Z0-9.\-_]+)(/.*)?", r)
                    assert r != "*" and m, f"S3 access beyond one bucket: {s}"
                    buckets.add(m.group(1))
                    if m.group(2):
                        assert re.fullmatch(r"/pp(/\*)?", m.group(2)), (
                            f"S3 objects outside the results prefix: {s}"
                        )
            if "iam:PassRole" in actions:
                # Each role sits behind an instance profile of the same name (docs/cluster.md).
                worker_roles = {
                    t["node_config"]["IamInstanceProfile"]["Arn"].replace(":instance-profile/", ":role/")
                    for name, t in prepared["available_node_types"].items()
                    if name != prepared["head_node_type"]
                }
                assert set(resources) <= worker_roles, f"iam:PassRole beyond the workers' role: {s}"
    assert len(buckets) == 1, f"policies reach more than the results bucket: {buckets}"
    head = heads[0]
    allowed = HEAD_EC2_ACTIONS | {
        "iam:PassRole",
        "ssm:GetParameters",
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }
    assert _actions(head) <= allowed, _actions(head) - allowed
    image_params = {
        t["node_config"]["ImageId"].removeprefix("resolve:ssm:")
        for t in prepared["available_node_types"].values()
    }
    for s in _allows(head):
        if "ssm:GetParameters" in _listed(s["Action"]):
            params = {
                m.group(1) if (m := re.fullmatch(r"arn:aws:ssm:[\w-]+::parameter(/.+)", r)) else r
                for r in _listed(s["Resource"])
            }
            assert params <= image_params, f"ssm:GetParameters beyond the image parameter: {s}"
    for p in workers:
        assert {a.split(":")[0] for a in _actions(p)} == {"s3"}, f"workers need S3 only: {_actions(p)}"


def test_every_placeholder_is_marked_change() -> None:
    found = 0
    for n, line in enumerate(CLUSTER_YAML.read_text().splitlines(), 1):
        value, _, comment = line.partition("#")  # a placeholder in a comment is an example
        if re.search(r"\b123456789012\b|\bsg-0123456789abcdef0\b|YOUR_|^\s*region:", value):
            found += 1
            assert "CHANGE" in comment, f"cluster.yaml:{n} holds a placeholder but no CHANGE: {line}"
    assert found >= 5  # region, two security groups, two instance profiles


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

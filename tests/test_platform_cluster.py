"""cluster.yaml against Ray's own cluster-launcher schema (ray/autoscaler/ray-schema.json)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_is_valid_for_the_ray_cluster_launcher():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER.read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # as written
    validate_config(prepare_config(config))  # as `ray up` sees it, AWS defaults filled in

    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0  # no trials on the head
    workers = [node for name, node in nodes.items() if name != config["head_node_type"]]
    assert workers and all(node["resources"]["GPU"] >= 1 and node["min_workers"] == 0 for node in workers)
    assert any("--dashboard-host=127.0.0.1" in command for command in config["head_start_ray_commands"])
    # Secure by default: token authentication on every node, the token mounted from the user's machine (never a
    # file of the repository), and every node in one user-made security group (Ray's own opens SSH to all).
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert all("RAY_AUTH_MODE=token" in c for c in commands if "ray start" in c)
    token_mounts = {remote: local for remote, local in config["file_mounts"].items() if remote.endswith("auth_token")}
    assert token_mounts and all(local.startswith("~/") for local in token_mounts.values())
    groups = [node["node_config"].get("SecurityGroupIds") for node in nodes.values()]
    assert groups[0] and all(group == groups[0] for group in groups)
    assert "." in config["file_mounts"].values()
    setup = config["setup_commands"]
    assert any("torch==" in c for c in setup) and any("pip install" in c and "dynagen" in c for c in setup)
    assert [i for i, c in enumerate(setup) if "torch==" in c][0] < [i for i, c in enumerate(setup) if "-e /home/ubuntu/dynagen" in c][0]

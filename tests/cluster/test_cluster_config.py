"""ray-cluster.yaml validates against the schema inside the ray package; the KubeRay manifests parse.

Ray's own offline path is used: ``prepare_config`` (merge the AWS defaults,
fill node-type bounds) then ``validate_config`` (jsonschema against
``ray/autoscaler/ray-schema.json``). Broken copies must fail, so the check
can fail.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.spec import check_run_name, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "ray-cluster.yaml"
K8S = ROOT / "cluster" / "k8s"


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_config_validates():
    raw = _cluster()
    validate_config(prepare_config(copy.deepcopy(raw)))
    assert raw["provider"]["type"] == "aws"
    nodes = raw["available_node_types"]
    head = nodes[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["node_config"]["InstanceType"] == "m5.2xlarge"
    gpu = {name: n for name, n in nodes.items() if n["resources"].get("GPU", 0) >= 1}
    assert gpu and gpu["worker.gpu-1x"]["resources"] == {"CPU": 4, "GPU": 1}
    for n in nodes.values():
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in n["resources"].values())
    setup = " ".join(raw["setup_commands"])
    assert "-c ~/gan-geometry/requirements.lock -e ~/gan-geometry" in setup
    assert "--no-deps gan-face-generate==" in setup
    assert raw["file_mounts"] == {"~/gan-geometry": "."}


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["available_node_types"]["worker.gpu-1x"]["resources"].update(GPU="1"),
        lambda c: c["available_node_types"]["worker.gpu-1x"]["resources"].update(GPU=0.5),
        lambda c: c.update(max_workers="8"),
        lambda c: c.update(head_start_ray_commands="ray start --head"),
        lambda c: c["available_node_types"]["worker.gpu-1x"].pop("node_config"),
        lambda c: c.update(unknown_field=1),
    ],
    ids=["string-resource", "fractional-resource", "string-max-workers", "commands-not-a-list",
         "no-node-config", "unknown-field"],
)
def test_broken_cluster_config_fails(breakage):
    raw = _cluster()
    breakage(raw)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(raw))


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _check_job_spec(job: dict) -> None:
    """A RayJob spec: entrypoint joins the cluster, one GPU worker group, the spec file mounted."""
    argv = shlex.split(job["entrypoint"])
    assert argv[:5] == ["python", "-m", "jobs.cli", "run", "/specs/quickstart.yaml"]
    assert argv[argv.index("--address") + 1] == "auto" and argv[argv.index("--store") + 1].startswith("s3://")
    cluster = job["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/specs"
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_rayjob_manifest():
    config_map, job = _docs("rayjob.yaml")
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    _check_job_spec(job["spec"])
    # The mounted spec is a valid sweep spec.
    spec = parse_spec(yaml.safe_load(config_map["data"]["quickstart.yaml"]))
    assert spec.name == "quickstart" and spec.store.startswith("s3://")


def test_raycronjob_manifest():
    (cron,) = _docs("raycronjob.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    from croniter import croniter

    assert croniter.is_valid(cron["spec"]["schedule"])
    assert cron["spec"]["suspend"] is False
    _check_job_spec(cron["spec"]["jobTemplate"])
    # Each fire its own run, named as `gangeo schedule` names fires once the shell expands the date.
    argv = shlex.split(cron["spec"]["jobTemplate"]["entrypoint"])
    name = argv[argv.index("--name") + 1]
    assert name == "quickstart-$(date -u +%Y%m%dT%H%MZ)"
    fire = subprocess.run(["sh", "-c", f"echo {name}"], capture_output=True, text=True, check=True).stdout.strip()
    assert check_run_name(fire) == fire and re.fullmatch(r"quickstart-\d{8}T\d{4}Z", fire)

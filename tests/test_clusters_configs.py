"""The cluster configs in clusters/ are valid before anyone pays for a node.

Theory of operation: the three launcher files (local, AWS, GCP) are checked the
way `ray up` checks them, offline: first against the JSON schema shipped inside
the installed ray package (loaded from the package, never a copy, so a Ray
upgrade that changes the schema shows up here), then through Ray's own
``prepare_config`` (merge provider defaults, fill per-type worker bounds) and
``validate_config`` (schema again plus cross-field rules). Neither needs cloud
credentials; the provider-specific bootstrap that does is not run. The KubeRay
manifest has no schema in reach, so :func:`_kuberay_problems` checks its
structure directly. Negative tests feed mutated configs to the same checks, so
a validator that silently passes everything would fail them.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTERS_DIR = Path(__file__).resolve().parent.parent / "clusters"

#: Launcher config file -> the provider type it must use.
LAUNCHER_CONFIGS = {"local.yaml": "local", "aws.yaml": "aws", "gcp.yaml": "gcp"}

# `pip install` (any options) of the distribution ddia-ray, from PyPI or from
# a `ddia-ray @ git+...` URL; not ddia-ray-something, not `pip uninstall`.
_INSTALLS_DDIA_RAY = re.compile(r"\bpip3?\s+install\b[^\n]*?(?<![\w.-])ddia-ray(?![\w.-])")

# A pinned official image: rayproject/ray:<2.minor.patch>[-pyXY]; never `latest`.
_PINNED_RAY_IMAGE = re.compile(r"^rayproject/ray:(?P<version>2\.\d+\.\d+)(?:-py3\d+)?$")

_KUBE_QUANTITY = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<suffix>m|k|K|M|G|T|Ki|Mi|Gi|Ti)?$")
_KUBE_SUFFIX = {
    None: 1.0, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}


def _ray_schema() -> dict:
    """The autoscaler schema from the installed ray package."""
    resource = importlib.resources.files("ray.autoscaler") / "ray-schema.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def _load(name: str) -> dict:
    """Parse one file of clusters/ with pyyaml (safe loader)."""
    with open(CLUSTERS_DIR / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _schema_errors(config: dict) -> list[jsonschema.ValidationError]:
    """Every schema violation in ``config`` (not only the first)."""
    return list(jsonschema.Draft7Validator(_ray_schema()).iter_errors(config))


def _check_like_ray_up(config: dict) -> dict:
    """Run Ray's offline pre-launch steps on a copy of ``config``; return the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _installs_ddia_ray(commands) -> bool:
    """True when one of the shell ``commands`` pip-installs ddia-ray."""
    return any(_INSTALLS_DDIA_RAY.search(command) for command in commands or ())


def _kube_quantity(text) -> float:
    """A Kubernetes resource quantity ("500m", "2", "4Gi") as a float in base units."""
    match = _KUBE_QUANTITY.match(str(text))
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match["number"]) * _KUBE_SUFFIX[match["suffix"]]


def _ray_containers(group: dict) -> list[dict]:
    """The containers of one head/worker group's pod template (Ray's is the first)."""
    return group.get("template", {}).get("spec", {}).get("containers", [])


def _container_problems(where: str, container: dict, ray_version) -> list[str]:
    """What is wrong with one Ray container of the KubeRay manifest."""
    problems = []
    image = container.get("image", "")
    pinned = _PINNED_RAY_IMAGE.match(image)
    if pinned is None:
        problems.append(f"{where}: image {image!r} is not pinned to rayproject/ray:2.x.y")
    elif pinned["version"] != ray_version:
        problems.append(f"{where}: image {image!r} does not match rayVersion {ray_version!r}")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for name in ("cpu", "memory"):
            if name not in resources.get(kind, {}):
                problems.append(f"{where}: resources.{kind}.{name} missing")
    for name in set(resources.get("requests", {})) & set(resources.get("limits", {})):
        if _kube_quantity(resources["requests"][name]) > _kube_quantity(resources["limits"][name]):
            problems.append(f"{where}: {name} request exceeds its limit")
    shell = " ".join(container.get("command", []) + container.get("args", []))
    install = _INSTALLS_DDIA_RAY.search(shell)
    start = shell.find("$KUBERAY_GEN_RAY_START_CMD")
    if install is None:
        problems.append(f"{where}: container command does not pip install ddia-ray")
    elif start < install.end() or "&&" not in shell[install.end():start]:
        problems.append(f"{where}: ddia-ray must be installed before, and gate (&&), the generated ray start")
    return problems


def _kuberay_problems(manifest: dict) -> list[str]:
    """Every structural problem of a RayCluster manifest, as readable strings (empty = fine)."""
    problems = []
    if manifest.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion is {manifest.get('apiVersion')!r}, expected 'ray.io/v1'")
    if manifest.get("kind") != "RayCluster":
        problems.append(f"kind is {manifest.get('kind')!r}, expected 'RayCluster'")
    if not manifest.get("metadata", {}).get("name"):
        problems.append("metadata.name missing")
    annotations = manifest.get("metadata", {}).get("annotations", {})
    if annotations.get("ray.io/overwrite-container-cmd") != "true":
        problems.append("the container command runs only with annotation ray.io/overwrite-container-cmd: 'true'")
    spec = manifest.get("spec", {})
    ray_version = spec.get("rayVersion")
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        return problems + ["spec.headGroupSpec missing"]
    groups = spec.get("workerGroupSpecs")
    if not isinstance(groups, list) or not groups:
        return problems + ["spec.workerGroupSpecs must list at least one worker group"]
    for where, group in [("head", head)] + [(f"worker group {i}", g) for i, g in enumerate(groups)]:
        params = group.get("rayStartParams")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            problems.append(f"{where}: rayStartParams must be a mapping of strings")
        containers = _ray_containers(group)
        if not containers:
            problems.append(f"{where}: pod template has no containers")
        else:
            problems.extend(_container_problems(where, containers[0], ray_version))
    for i, group in enumerate(groups):
        bounds = [group.get(key) for key in ("minReplicas", "replicas", "maxReplicas")]
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            problems.append(f"worker group {i}: minReplicas/replicas/maxReplicas must be integers")
        elif not 0 <= bounds[0] <= bounds[1] <= bounds[2] or bounds[2] < 1:
            problems.append(f"worker group {i}: need 0 <= minReplicas <= replicas <= maxReplicas, maxReplicas >= 1")
        if not group.get("groupName"):
            problems.append(f"worker group {i}: groupName missing")
    return problems


# --- the launcher configs ----------------------------------------------------


def test_schema_comes_from_the_installed_ray_and_is_a_valid_draft7_schema():
    schema = _ray_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    # The properties these configs rely on are really described by it.
    assert {"setup_commands", "available_node_types", "max_workers", "provider"} <= set(schema["properties"])


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_matches_rays_schema(name):
    config = _load(name)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _schema_errors(config)]
    assert errors == []
    assert config["provider"]["type"] == LAUNCHER_CONFIGS[name]


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_passes_rays_prelaunch_checks(name):
    prepared = _check_like_ray_up(_load(name))
    node_types = prepared["available_node_types"]
    assert prepared["head_node_type"] in node_types
    workers = {k: v for k, v in node_types.items() if k != prepared["head_node_type"]}
    if name == "local.yaml":
        # On-prem: Ray turns worker_ips into one node type holding head and workers alike.
        workers = node_types
    assert workers, "no node type can host workers"
    for node_type in workers.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= prepared["max_workers"]
    assert sum(t["min_workers"] for t in node_types.values()) <= prepared["max_workers"]


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_every_node_of_every_launcher_config_installs_ddia_ray(name):
    config = _load(name)
    # In the common setup_commands, so head and workers both get it ...
    assert _installs_ddia_ray(config["setup_commands"])
    # ... and still there after Ray merges them into the per-role lists, for
    # every worker type (a type's own worker_setup_commands would replace them).
    prepared = _check_like_ray_up(config)
    assert _installs_ddia_ray(prepared["head_setup_commands"])
    for node_type in prepared["available_node_types"].values():
        assert _installs_ddia_ray(node_type.get("worker_setup_commands", prepared["worker_setup_commands"]))


def test_one_ray_version_everywhere():
    """Docker images, the KubeRay images and the on-prem pip pin name the same Ray."""
    versions = {}
    for name in ("aws.yaml", "gcp.yaml"):
        image = _load(name)["docker"]["image"]
        pinned = _PINNED_RAY_IMAGE.match(image)
        assert pinned is not None, f"{name}: {image!r} is not pinned"
        versions[name] = pinned["version"]
    local_pins = [re.search(r"ray\[default\]==(2\.\d+\.\d+)", c) for c in _load("local.yaml")["setup_commands"]]
    versions["local.yaml"] = next(m.group(1) for m in local_pins if m)
    kuberay = _load("kuberay.yaml")["spec"]
    versions["kuberay.yaml"] = kuberay["rayVersion"]
    assert len(set(versions.values())) == 1, versions


def test_install_pattern_accepts_pypi_and_git_forms_and_nothing_else():
    assert _installs_ddia_ray(['pip install -U "ddia-ray"'])
    assert _installs_ddia_ray(['python -m pip install "ddia-ray @ git+https://github.com/o/ddia-ray.git@v1"'])
    assert _installs_ddia_ray(["pip install --no-cache-dir ddia-ray==0.1.0 && ray start"])
    assert not _installs_ddia_ray(["pip install ddia-ray-extras"])
    assert not _installs_ddia_ray(["pip uninstall -y ddia-ray"])
    assert not _installs_ddia_ray(["echo ddia-ray", "pip install ray"])
    assert not _installs_ddia_ray([])


# --- negative tests: the validators are live -----------------------------------


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_wrong_type_for_max_workers_is_rejected(name):
    config = _load(name)
    config["max_workers"] = "two"
    errors = _schema_errors(config)
    assert [list(e.absolute_path) for e in errors] == [["max_workers"]]
    # Ray's own validator rejects it too, on an otherwise prepared config.
    prepared = _check_like_ray_up(_load(name))
    prepared["max_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepared)


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_misspelt_key_is_rejected(name):
    config = _load(name)
    config["setup_command"] = config.pop("setup_commands")  # a typo that would silently skip the install
    errors = _schema_errors(config)
    assert len(errors) == 1 and "setup_command" in errors[0].message


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_non_integer_resources_are_rejected(name):
    config = _load(name)
    worker = next(k for k in config["available_node_types"] if k != config["head_node_type"])
    config["available_node_types"][worker]["resources"] = {"CPU": 1.5}
    errors = _schema_errors(config)
    assert errors and list(errors[0].absolute_path)[-2:] == ["resources", "CPU"]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_rays_cross_field_rules_are_enforced(name):
    """Rules the schema cannot express, checked only by Ray's validate_config."""
    config = _load(name)
    worker = next(k for k in config["available_node_types"] if k != config["head_node_type"])
    config["available_node_types"][worker]["min_workers"] = config["max_workers"] + 1
    assert _schema_errors(config) == []
    with pytest.raises(ValueError, match="max_workers"):
        _check_like_ray_up(config)

    config = _load(name)
    config["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type"):
        _check_like_ray_up(config)


@pytest.mark.parametrize("name", sorted(LAUNCHER_CONFIGS))
def test_config_without_the_install_is_caught(name):
    config = _load(name)
    config["setup_commands"] = [c for c in config["setup_commands"] if "ddia-ray" not in c]
    assert _schema_errors(config) == []  # still a valid Ray config ...
    assert not _installs_ddia_ray(_check_like_ray_up(config)["worker_setup_commands"])  # ... but useless


# --- the KubeRay manifest ------------------------------------------------------


def test_kuberay_manifest_is_a_well_formed_raycluster():
    manifest = _load("kuberay.yaml")
    assert _kuberay_problems(manifest) == []
    spec = manifest["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["name"] == "ray-head"
    group = spec["workerGroupSpecs"][0]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_kuberay_head_and_workers_run_the_same_image():
    spec = _load("kuberay.yaml")["spec"]
    images = {c["image"] for c in _ray_containers(spec["headGroupSpec"])}
    for group in spec["workerGroupSpecs"]:
        images |= {_ray_containers(group)[0]["image"]}
    assert len(images) == 1, images


def _mutate(edit):
    """A copy of the KubeRay manifest with ``edit(manifest)`` applied."""
    manifest = copy.deepcopy(_load("kuberay.yaml"))
    edit(manifest)
    return manifest


def _first_worker(manifest: dict) -> dict:
    return manifest["spec"]["workerGroupSpecs"][0]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.update(apiVersion="ray.io/v1alpha1"), "apiVersion"),
        (lambda m: m.update(kind="RayJob"), "kind"),
        (lambda m: m["spec"].pop("headGroupSpec"), "headGroupSpec"),
        (lambda m: m["spec"].update(workerGroupSpecs=[]), "workerGroupSpecs"),
        (lambda m: _first_worker(m).update(minReplicas=5), "minReplicas"),
        (lambda m: _first_worker(m).update(maxReplicas="4"), "integers"),
        (lambda m: _ray_containers(_first_worker(m))[0].update(image="rayproject/ray:latest"), "not pinned"),
        (lambda m: _ray_containers(m["spec"]["headGroupSpec"])[0].update(image="rayproject/ray:2.9.0-py311"),
         "does not match rayVersion"),
        (lambda m: _ray_containers(_first_worker(m))[0].update(args=["$KUBERAY_GEN_RAY_START_CMD"]),
         "does not pip install ddia-ray"),
        (lambda m: _ray_containers(_first_worker(m))[0].update(
            args=['$KUBERAY_GEN_RAY_START_CMD; pip install "ddia-ray"']), "before"),
        (lambda m: _ray_containers(_first_worker(m))[0]["resources"].pop("limits"), "limits"),
        (lambda m: _ray_containers(_first_worker(m))[0]["resources"]["requests"].update(memory="8Gi"),
         "exceeds"),
        (lambda m: m["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}), "strings"),
        (lambda m: m["metadata"].pop("annotations"), "overwrite-container-cmd"),
    ],
)
def test_kuberay_checker_rejects_broken_manifests(edit, expected):
    problems = _kuberay_problems(_mutate(edit))
    assert any(expected in p for p in problems), problems


def test_kube_quantities_compare_by_value():
    assert _kube_quantity("500m") < _kube_quantity("1") == _kube_quantity("1000m")
    assert _kube_quantity("4Gi") == 4 * 2**30 > _kube_quantity("4G")
    with pytest.raises(ValueError):
        _kube_quantity("lots")

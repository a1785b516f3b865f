"""The Kubernetes deployment, offline: every built-in object against the Kubernetes
OpenAPI schemas shipped in the `kubernetes-validate` package (strict: unknown fields are
errors), the operators' objects (Strimzi, KEDA, Prometheus Operator) against the
structure written here, and the security defaults and cross-file agreements."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

# The oldest Kubernetes minor we support, and the newest the package has schemas for.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1")

_OBJ = {"type": "object"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_STRS = {"type": "array", "items": _STR}
_LABELS = {"type": "object", "additionalProperties": _STR}
_SELECTOR = {"type": "object", "properties": {"matchLabels": _LABELS}, "required": ["matchLabels"]}


def _spec(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _STR, "labels": _LABELS},
            },
            "spec": {
                "type": "object",
                "required": required,
                "additionalProperties": False,
                "properties": properties,
            },
        },
    }


_ACL = {
    "type": "object",
    "required": ["resource", "operations"],
    "properties": {
        "resource": {
            "type": "object",
            "required": ["type", "name"],
            "properties": {
                "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                "patternType": {"enum": ["literal", "prefix"]},
            },
        },
        "operations": {
            "type": "array",
            "items": {
                "enum": [
                    "Read",
                    "Write",
                    "Create",
                    "Delete",
                    "Alter",
                    "Describe",
                    "ClusterAction",
                    "AlterConfigs",
                    "DescribeConfigs",
                    "IdempotentWrite",
                    "All",
                ]
            },
        },
    },
}
_ENDPOINT = {
    "type": "object",
    "required": ["port"],
    "properties": {"port": _STR, "path": _STR, "interval": _STR, "scrapeTimeout": _STR},
}

# (apiVersion, kind) -> the structure these objects must have: the required fields and
# the spec fields the operators' CRDs define (a subset; a misspelt field is an error).
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): _spec(
        ["kafka"],
        {
            "kafka": {
                "type": "object",
                "required": ["listeners"],
                "additionalProperties": False,
                "properties": {
                    "version": _STR,
                    "metadataVersion": _STR,
                    "listeners": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "port", "type", "tls"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
                                "port": {"type": "integer", "minimum": 9092},
                                "type": {
                                    "enum": [
                                        "internal",
                                        "route",
                                        "loadbalancer",
                                        "nodeport",
                                        "ingress",
                                        "cluster-ip",
                                    ]
                                },
                                "tls": {"type": "boolean"},
                                "authentication": {
                                    "type": "object",
                                    "properties": {
                                        "type": {
                                            "enum": ["tls", "scram-sha-512", "oauth", "custom"]
                                        }
                                    },
                                },
                                "networkPolicyPeers": {"type": "array", "items": _OBJ},
                                "configuration": _OBJ,
                            },
                        },
                    },
                    "authorization": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["simple", "opa", "keycloak", "custom"]}},
                    },
                    "config": _OBJ,
                    "template": _OBJ,
                    "metricsConfig": _OBJ,
                    "rack": _OBJ,
                },
            },
            "entityOperator": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"topicOperator": _OBJ, "userOperator": _OBJ, "template": _OBJ},
            },
            "kafkaExporter": _OBJ,
            "cruiseControl": _OBJ,
        },
    ),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): _spec(
        ["replicas", "roles", "storage"],
        {
            "replicas": {"type": "integer", "minimum": 0},
            "roles": {"type": "array", "items": {"enum": ["controller", "broker"]}},
            "storage": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["ephemeral", "persistent-claim", "jbod"]}},
            },
            "resources": _OBJ,
            "jvmOptions": _OBJ,
            "template": _OBJ,
        },
    ),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): _spec(
        ["partitions", "replicas"],
        {
            "topicName": _STR,
            "partitions": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
            "config": _OBJ,
        },
    ),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): _spec(
        ["authentication"],
        {
            "authentication": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
            },
            "authorization": {
                "type": "object",
                "required": ["type", "acls"],
                "properties": {
                    "type": {"enum": ["simple"]},
                    "acls": {"type": "array", "items": _ACL},
                },
            },
            "quotas": _OBJ,
            "template": _OBJ,
        },
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _spec(
        ["scaleTargetRef", "triggers"],
        {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _STR, "kind": _STR, "apiVersion": _STR},
            },
            "pollingInterval": _INT,
            "cooldownPeriod": _INT,
            "minReplicaCount": _INT,
            "maxReplicaCount": _INT,
            "idleReplicaCount": _INT,
            "fallback": _OBJ,
            "advanced": _OBJ,
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": _STR,
                        "name": _STR,
                        "metadata": {"type": "object", "additionalProperties": _STR},
                        "authenticationRef": {"type": "object", "required": ["name"]},
                        "metricType": _STR,
                        "useCachedMetrics": {"type": "boolean"},
                    },
                },
            },
        },
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _spec(
        [],
        {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {"parameter": _STR, "name": _STR, "key": _STR},
                },
            },
            "env": {"type": "array"},
            "podIdentity": _OBJ,
            "hashiCorpVault": _OBJ,
        },
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _spec(
        ["selector", "endpoints"],
        {
            "jobLabel": _STR,
            "selector": _SELECTOR,
            "namespaceSelector": _OBJ,
            "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
        },
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): _spec(
        ["selector", "podMetricsEndpoints"],
        {
            "jobLabel": _STR,
            "selector": _SELECTOR,
            "namespaceSelector": _OBJ,
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
        },
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _spec(
        ["groups"],
        {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "properties": {
                        "name": _STR,
                        "interval": _STR,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "additionalProperties": False,
                                "properties": {
                                    "alert": _STR,
                                    "record": _STR,
                                    "expr": _STR,
                                    "for": _STR,
                                    "labels": _LABELS,
                                    "annotations": _LABELS,
                                },
                            },
                        },
                    },
                },
            }
        },
    ),
}


Manifests = list[tuple[Path, dict[str, Any]]]


def _of_kind(manifests: Manifests, kind: str) -> list[dict[str, Any]]:
    return [doc for _path, doc in manifests if doc["kind"] == kind]


def _pod_specs(manifests: Manifests) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for _path, doc in manifests
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    ]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_match_the_kubernetes_schemas(manifests: Manifests, version: str) -> None:
    checked = 0
    for path, doc in manifests:
        if doc["apiVersion"] in BUILTIN_GROUPS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc}")
            checked += 1
    assert checked >= 15


def test_operator_objects_match_their_structure(manifests: Manifests) -> None:
    kinds = set()
    for path, doc in manifests:
        if doc["apiVersion"] in BUILTIN_GROUPS:
            continue
        schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        assert schema is not None, f"{path.name}: no structure known for {doc['apiVersion']}"
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
        kinds.add(doc["kind"])
    assert kinds == {kind for _api, kind in CRD_SCHEMAS}


def test_the_validators_reject_a_broken_object(manifests: Manifests) -> None:
    """Both checks above can fail: a misspelt field is refused by each."""
    deployment = dict(_of_kind(manifests, "Deployment")[0])
    deployment["spec"] = {**deployment["spec"], "replica": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    scaled = dict(_of_kind(manifests, "ScaledObject")[0])
    scaled["spec"] = {**scaled["spec"], "maxReplicas": 3}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


def test_the_kustomization_lists_every_manifest(deploy_dir: Path) -> None:
    kustomization = yaml.safe_load((deploy_dir / "kustomization.yaml").read_text())
    listed = {deploy_dir / rel for rel in kustomization["resources"]}
    present = set((deploy_dir / "kubernetes").glob("*.yaml")) - {
        deploy_dir / "kubernetes" / "milvus-values.yaml"  # Helm values, not objects
    }
    assert listed == present
    for generator in kustomization["configMapGenerator"]:
        for rel in generator["files"]:
            assert (deploy_dir / rel).is_file()


def test_pods_run_non_root_read_only_with_limits(manifests: Manifests) -> None:
    specs = _pod_specs(manifests)
    assert {name for name, _ in specs} == {"crossfeed-worker", "crossfeed-api", "redis"}
    for name, spec in specs:
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert {"cpu", "memory"} <= set(resources["limits"]), name


_SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


def test_secrets_come_from_secret_objects(manifests: Manifests, deploy_dir: Path) -> None:
    for name, spec in _pod_specs(manifests):
        for container in spec["containers"]:
            for var in container.get("env", []):
                if _SECRETISH.search(var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: {var['name']}"
    for doc in _of_kind(manifests, "ConfigMap"):
        for key in doc.get("data", {}):
            assert not _SECRETISH.search(key) or key == "KAFKA_SSL_CAFILE", key
    assert _of_kind(manifests, "Secret") == [], "Secrets are created by hand, not shipped"
    kustomization = yaml.safe_load((deploy_dir / "kustomization.yaml").read_text())
    for generator in kustomization.get("secretGenerator", []):
        for literal in generator.get("literals", []):
            assert not _SECRETISH.search(literal.split("=", 1)[0]), literal


def test_only_the_api_is_open_to_any_client(manifests: Manifests) -> None:
    policies = _of_kind(manifests, "NetworkPolicy")
    default = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(default) == 1 and "ingress" not in default[0]["spec"]
    assert default[0]["spec"]["policyTypes"] == ["Ingress"]
    open_to_all = [
        p["spec"]["podSelector"]["matchLabels"]
        for p in policies
        for rule in p["spec"].get("ingress", [])
        if "from" not in rule
    ]
    assert open_to_all == [{"app.kubernetes.io/name": "crossfeed-api"}]
    for service in _of_kind(manifests, "Service"):
        assert service["spec"]["type"] == "ClusterIP"


def _config_env(manifests: Manifests) -> dict[str, str]:
    (config,) = [
        c for c in _of_kind(manifests, "ConfigMap") if c["metadata"]["name"] == "crossfeed-config"
    ]
    return {key: str(value) for key, value in config["data"].items()}


def test_the_config_names_only_real_settings_and_loads(
    manifests: Manifests, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossfeed.core import settings as settings_module
    from crossfeed.core.kafka import KafkaConnection

    aliases = {
        field.alias
        for cls in vars(settings_module).values()
        if isinstance(cls, type) and issubclass(cls, settings_module._Base)
        for field in cls.model_fields.values()
        if field.alias
    }
    env = _config_env(manifests)
    assert set(env) - aliases == set(), "ConfigMap keys crossfeed does not read"
    for key in list(os.environ):
        if key.startswith(("CROSSFEED_", "KAFKA_", "MILVUS_", "REDIS_")):
            monkeypatch.delenv(key)
    import certifi

    # The CA file is mounted from Strimzi's Secret in the pod; here any real bundle.
    secrets = {"KAFKA_SASL_PASSWORD": "x", "MILVUS_TOKEN": "root:x"}
    for key, value in {**env, **secrets, "KAFKA_SSL_CAFILE": certifi.where()}.items():
        monkeypatch.setenv(key, value)
    settings = settings_module.Settings()
    connection = KafkaConnection(settings.kafka)  # SASL over TLS, valid as configured
    assert connection.faust()["broker_credentials"] is not None
    assert settings.stream.metrics_port == 9400 and settings.stream.metrics_host == "0.0.0.0"
    assert settings.kafka.replication_factor == 3


def test_keda_watches_the_workers_consumer_group(
    manifests: Manifests, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossfeed.core.settings import Settings
    from crossfeed.streams.app import consumer_group
    from crossfeed.streams.pipeline import STAGES

    for key, value in _config_env(manifests).items():
        monkeypatch.setenv(key, value)
    group = consumer_group(Settings(), STAGES, None)
    (scaled,) = _of_kind(manifests, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == group, (
        f"CROSSFEED_MODEL_VERSION changed: set the ScaledObject's consumerGroup to {group}"
    )
    assert trigger["metadata"]["bootstrapServers"] == _config_env(manifests)["KAFKA_BOOTSTRAP"]
    partitions = int(_config_env(manifests)["CROSSFEED_PARTITIONS"])
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    assert scaled["spec"]["scaleTargetRef"]["name"] == "crossfeed-worker"


def test_kafka_has_three_kraft_brokers_replicating_every_topic(manifests: Manifests) -> None:
    (kafka,) = _of_kind(manifests, "Kafka")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    (pool,) = _of_kind(manifests, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    topics = {t["spec"]["topicName"]: t["spec"] for t in _of_kind(manifests, "KafkaTopic")}
    assert set(topics) == {"posts.raw", "posts.clean", "posts.vectors", "posts.deadletter"}
    partitions = int(_config_env(manifests)["CROSSFEED_PARTITIONS"])
    for spec in topics.values():
        assert spec["replicas"] == 3 and spec["config"]["min.insync.replicas"] == 2
        assert spec["partitions"] == partitions
    assert topics["posts.clean"]["config"]["cleanup.policy"] == "compact"
    for listener in kafka["spec"]["kafka"]["listeners"]:
        assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"


def test_milvus_values_run_the_compose_version_in_cluster_mode(deploy_dir: Path) -> None:
    values = yaml.safe_load((deploy_dir / "kubernetes" / "milvus-values.yaml").read_text())
    compose = yaml.safe_load((deploy_dir / "docker-compose.yml").read_text())
    assert values["cluster"]["enabled"] is True
    assert (
        compose["services"]["milvus"]["image"] == f"milvusdb/milvus:{values['image']['all']['tag']}"
    )
    assert values["pulsarv3"]["enabled"] is False and values["externalKafka"]["enabled"] is True
    assert values["externalKafka"]["sasl"]["password"] == ""  # from the environment
    assert "accessKey" not in values["minio"] and values["minio"]["existingSecret"]
    for component in ("proxy", "queryNode", "indexNode", "dataNode", "mixCoordinator"):
        env = {e["name"]: e for e in values[component]["extraEnv"]}
        assert all("secretKeyRef" in e["valueFrom"] for e in env.values()), component

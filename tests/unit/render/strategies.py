"""Hypothesis strategies for valid ModelDeployment specs, reusable by any test module.

`single_node_specs()` draws wire-form spec dicts (camelCase, as a user writes them) that the
API accepts and planning turns into a single-node plan with `FACTS`; `single_node_plans()`
draws the plans themselves. Values stay inside what Kubernetes itself accepts (label
syntax, toleration rules), so rendered objects can be checked against the API's rules.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

from hypothesis import strategies as st

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.planning import ClusterFacts, ServingPlan, plan
from sovereign_worker.sovereignty import validate_env

MAX_GPUS_PER_NODE: Final = 8
FACTS: Final = ClusterFacts(default_gpus_per_node=MAX_GPUS_PER_NODE)
GPU_TYPES: Final = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L40S")
# Known-good vLLM 0.32 flags, each with the spellings users write (a flag may appear once).
EXTRA_ARG_SPELLINGS: Final = (
    (("--max-num-seqs", "64"), ("--max-num-seqs=32",)),
    (("--enable-prefix-caching",), ("--no-enable-prefix-caching",)),
    (("--kv-cache-dtype", "fp8"),),
    (("--max-num-batched-tokens", "8192"),),
    (("--block-size", "16"),),
    (("--enforce-eager",),),
    (("--seed", "7"),),
)

names = st.from_regex(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
"""ModelDeployment names: DNS-1035 labels of at most 40 characters (the API's cap)."""
namespaces = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
path_segments = st.from_regex(r"[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]{0,15}", fullmatch=True)
relative_paths = st.lists(path_segments, min_size=0, max_size=4).map("/".join)
label_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
label_keys = st.one_of(
    label_names,
    st.builds(lambda prefix, name: f"{prefix}.example/{name}", dns_labels, label_names),
)
label_values = st.one_of(st.just(""), label_names)
labels = st.dictionaries(label_keys, label_values, max_size=4)
cpu_quantities = st.one_of(
    st.integers(1, 96).map(str), st.integers(100, 9900).map(lambda m: f"{m}m")
)
memory_quantities = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(1, 2048), st.sampled_from(["Mi", "Gi", "G"])
)
cidrs = st.builds(
    lambda address, prefix: str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)),
    st.ip_addresses(v=4),
    st.integers(8, 32),
)


@st.composite
def _sources(draw: st.DrawFn) -> dict[str, Any]:
    """spec.model without the digest: a pvc, s3 or file source with matching settings."""
    scheme = draw(st.sampled_from(["pvc", "s3", "file"]))
    if scheme == "pvc":
        return {"source": f"pvc://{draw(dns_labels)}/{draw(relative_paths)}".rstrip("/")}
    if scheme == "file":
        return {
            "source": "file:///"
            + draw(st.lists(path_segments, min_size=1, max_size=4).map("/".join))
        }
    bucket = draw(st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True))
    s3: dict[str, Any] = {"endpoint": f"https://{draw(dns_labels)}.storage.svc:9000"}
    if draw(st.booleans()):
        s3["credentialsSecret"] = draw(dns_labels)
    if draw(st.booleans()):
        s3["region"] = draw(st.sampled_from(["eu-central-1", "local"]))
    cache = draw(
        st.one_of(
            st.none(),
            st.builds(lambda claim: {"claimName": claim}, dns_labels),
            st.builds(lambda size: {"sizeLimit": size}, memory_quantities),
        )
    )
    model = {"source": f"s3://{bucket}/{draw(relative_paths)}".rstrip("/"), "s3": s3}
    return model | ({"cache": cache} if cache else {})


def _env_is_valid(name: str) -> bool:
    return not validate_env([(name, "")])


env_names = st.one_of(
    st.sampled_from(["OMP_NUM_THREADS", "NCCL_DEBUG", "VLLM_LOGGING_LEVEL", "TZ"]),
    st.from_regex(r"APP_[A-Z0-9_]{1,12}", fullmatch=True),
).filter(_env_is_valid)
env_values = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40)


@st.composite
def _engine(draw: st.DrawFn, tensor: int) -> dict[str, Any]:
    engine: dict[str, Any] = {}
    optional = {
        "image": st.sampled_from(
            ["registry.internal/ai/vllm:0.32.0", "registry.internal/ai/vllm@sha256:" + "c" * 64]
        ),
        "maxModelLen": st.integers(16, 131_072),
        "dtype": st.sampled_from(["auto", "bfloat16", "float16", "float32"]),
        "quantization": st.sampled_from(["awq", "gptq", "fp8"]),
        "gpuMemoryUtilization": st.floats(0.05, 1.0),
        "extraArgs": st.lists(
            st.sampled_from(EXTRA_ARG_SPELLINGS).flatmap(st.sampled_from),
            max_size=3,
            unique_by=lambda spelling: spelling[0].split("=")[0].replace("--no-", "--"),
        ).map(lambda groups: [token for group in groups for token in group]),
        "env": st.lists(
            st.builds(lambda n, v: {"name": n, "value": v}, env_names, env_values),
            max_size=4,
            unique_by=lambda e: e["name"],
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            engine[key] = draw(strategy)
    if tensor >= 2 and draw(st.booleans()):
        engine["expertParallel"] = True
    return engine


@st.composite
def _tolerations(draw: st.DrawFn) -> dict[str, Any]:
    """Tolerations Kubernetes accepts: Exists takes no value, tolerationSeconds needs NoExecute."""
    toleration: dict[str, Any] = {"key": draw(label_keys)}
    if draw(st.booleans()):
        toleration["operator"] = "Exists"
    else:
        toleration |= {"operator": "Equal", "value": draw(label_values)}
    effect = draw(st.sampled_from([None, "NoSchedule", "PreferNoSchedule", "NoExecute"]))
    if effect is not None:
        toleration["effect"] = effect
    if effect == "NoExecute" and draw(st.booleans()):
        toleration["tolerationSeconds"] = draw(st.integers(0, 3600))
    return toleration


@st.composite
def _ingress_sources(draw: st.DrawFn) -> dict[str, Any]:
    source: dict[str, Any] = {}
    if draw(st.booleans()):
        source["namespaceSelector"] = {"matchLabels": draw(labels)}
    if draw(st.booleans()):
        source["podSelector"] = {
            "matchLabels": draw(labels),
            "matchExpressions": draw(
                st.lists(
                    st.one_of(
                        st.builds(
                            lambda k, vs: {"key": k, "operator": "In", "values": vs},
                            label_keys,
                            st.lists(label_values, min_size=1, max_size=3),
                        ),
                        st.builds(lambda k: {"key": k, "operator": "Exists"}, label_keys),
                    ),
                    max_size=2,
                )
            ),
        }
    if draw(st.booleans()) or not source:
        source["cidr"] = draw(cidrs)  # an empty source is refused: it would admit nobody
    return source


@st.composite
def single_node_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A wire-form spec that parses and plans to one pod per replica with `FACTS`."""
    gpus = draw(st.integers(1, MAX_GPUS_PER_NODE))
    tensor = draw(st.sampled_from([d for d in range(1, gpus + 1) if gpus % d == 0]))
    resources: dict[str, Any] = {"gpus": gpus}
    for key, strategy in {
        "gpuType": st.sampled_from(GPU_TYPES),
        "gpusPerNode": st.integers(gpus, 64),
        "cpu": cpu_quantities,
        "memory": memory_quantities,
        "sharedMemory": memory_quantities,
    }.items():
        if draw(st.booleans()):
            resources[key] = draw(strategy)
    model = draw(_sources()) | {"digest": draw(digests)}
    if draw(st.booleans()):
        model["servedName"] = draw(
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,30}", fullmatch=True)
        )
    spec: dict[str, Any] = {
        "model": model,
        "resources": resources,
        "engine": draw(_engine(tensor)),
        "replicas": draw(st.integers(0, 10)),
        "placement": {
            "nodeSelector": draw(labels),
            "tolerations": draw(st.lists(_tolerations(), max_size=3)),
            "residency": draw(labels),
        },
        "network": {
            "egress": draw(st.sampled_from(["none", "modelStore"])),
            # An s3 source with modelStore egress must name the store's address blocks.
            "modelStoreCidrs": draw(
                st.lists(
                    cidrs, min_size=1 if model["source"].startswith("s3://") else 0, max_size=3
                )
            ),
            "ingress": draw(st.lists(_ingress_sources(), max_size=3)),
        },
        "audit": {"requests": draw(st.sampled_from(["none", "metadata", "full"]))},
    }
    if tensor != gpus or draw(st.booleans()):
        spec["parallelism"] = {"tensor": tensor, "pipeline": gpus // tensor}
    if draw(st.booleans()):
        low = draw(st.integers(0, 5))
        spec["scaling"] = {
            "minReplicas": low,
            "maxReplicas": draw(st.integers(max(low, 1), 10)),
            "metric": "queueDepth",
            "target": draw(st.floats(0.5, 64)),
        }
    return spec


@st.composite
def single_node_plans(draw: st.DrawFn) -> ServingPlan:
    """A single-node ServingPlan of a drawn spec, name and namespace."""
    spec = ModelDeploymentSpec.model_validate(draw(single_node_specs()))
    return plan(draw(names), draw(namespaces), spec, FACTS)


@st.composite
def multi_node_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A wire-form spec that plans to a group of 2-8 pods per replica with `FACTS`.

    Built on a single-node spec (every other section drawn the same way), with the
    resources, parallelism and multiNode sections replaced.
    """
    spec = draw(single_node_specs())
    gpus_per_node = draw(st.sampled_from([1, 2, 4, 8]))
    nodes = draw(st.integers(2, 8))
    gpus = gpus_per_node * nodes
    spec["resources"] = {
        key: value for key, value in spec["resources"].items() if key not in ("gpus", "gpusPerNode")
    } | {"gpus": gpus, "gpusPerNode": gpus_per_node}
    spec.pop("parallelism", None)
    if draw(st.booleans()):
        tensor = draw(
            st.sampled_from([d for d in range(1, gpus_per_node + 1) if gpus_per_node % d == 0])
        )
        spec["parallelism"] = {"tensor": tensor, "pipeline": gpus // tensor}
    tensor = spec.get("parallelism", {}).get("tensor", gpus_per_node)
    if tensor < 2:
        spec["engine"].pop("expertParallel", None)
    spec["multiNode"] = {
        "backend": draw(st.sampled_from(["native", "ray"])),
        "placementTimeout": draw(st.integers(30, 3600)),
    }
    spec["replicas"] = draw(st.integers(0, 4))
    return spec


@st.composite
def multi_node_plans(draw: st.DrawFn) -> ServingPlan:
    """A multi-node ServingPlan of a drawn spec, name and namespace."""
    spec = ModelDeploymentSpec.model_validate(draw(multi_node_specs()))
    return plan(draw(names), draw(namespaces), spec, FACTS)

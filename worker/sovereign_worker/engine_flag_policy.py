"""Which vLLM 0.32 flags `engine.extraArgs` may carry, and why the others may not.

Every flag of the vendored table was reviewed. A flag not named here is an ordinary tuning
knob (batching, caching, kernels, logging levels, parsers, ...) and is accepted. The
refused ones fall into five groups: the operator sets them from the spec; they read or
write files outside the verified model; they reach the network; they load Python code by
name or path; or they expose request contents. Each entry says why in its message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Denial:
    reason: str
    """Why the flag is refused, phrased to follow "--flag is refused: "."""
    instead: str | None = None
    """What to do instead, when there is something."""
    negation_allowed: bool = False
    """`--no-FLAG` only switches the risky behaviour off, so it is accepted."""


def _owned(instead: str, why: str = "the operator sets it") -> Denial:
    return Denial(why, instead)


_REPLICAS: Final = _owned(
    "run more copies with spec.replicas or spec.scaling",
    "copies of the model are replicas the operator schedules and scales, not vLLM data parallel",
)
_MULTI_NODE: Final = _owned(
    "choose the backend with spec.multiNode.backend",
    "the operator forms multi-node groups and sets each pod's role and rendezvous",
)
_TLS: Final = Denial(
    "TLS is terminated by the gateway; the engine serves plain HTTP inside the pod network "
    "and these options read key files from the pod"
)
_CODE: Final = Denial(
    "it loads Python code by name or path, which the model digest and the trust-remote-code "
    "policy do not cover",
    "build the code into the engine image and let a ModelPolicy review it",
)
_NETWORK: Final = Denial(
    "it makes the engine talk to other hosts; engine pods have no egress and all traffic goes "
    "through the gateway"
)
_HUB: Final = Denial(
    "it selects a Hugging Face Hub revision; engine pods never reach the Hub",
    "pin the model with spec.model.digest",
)
_OUTSIDE_MODEL: Final = Denial(
    "it loads files from a path or the Hub outside the verified model directory",
    "ship the file inside the model, where spec.model.digest covers it",
)

DENIED: Final[Mapping[str, Denial]] = {
    # Set by the operator from the spec.
    "model": _owned(
        "use spec.model.source instead", "the operator passes the verified model directory"
    ),
    "served-model-name": _owned("use spec.model.servedName instead"),
    "host": Denial("the operator binds the engine where the gateway and probes reach it"),
    "port": Denial("the operator sets the port the gateway, probes and NetworkPolicy use"),
    "uds": Denial("a Unix socket would hide the engine from the gateway and the probes"),
    "tensor-parallel-size": _owned("use spec.parallelism.tensor or spec.resources.gpus instead"),
    "pipeline-parallel-size": _owned(
        "use spec.parallelism.pipeline or spec.resources.gpus instead"
    ),
    "prefill-context-parallel-size": _owned(
        "size replicas with spec.resources.gpus instead",
        "it multiplies the GPUs a replica needs behind the operator's back",
    ),
    "data-parallel-size": _REPLICAS,
    "data-parallel-size-local": _REPLICAS,
    "data-parallel-rank": _REPLICAS,
    "data-parallel-start-rank": _REPLICAS,
    "data-parallel-address": _REPLICAS,
    "data-parallel-rpc-port": _REPLICAS,
    "data-parallel-backend": _REPLICAS,
    "data-parallel-hybrid-lb": _REPLICAS,
    "data-parallel-external-lb": _REPLICAS,
    "data-parallel-multi-port-external-lb": _REPLICAS,
    "data-parallel-supervisor-port": _REPLICAS,
    "dp-supervisor-probe-interval-s": _REPLICAS,
    "dp-supervisor-probe-timeout-s": _REPLICAS,
    "dp-supervisor-probe-failure-threshold": _REPLICAS,
    "enable-elastic-ep": _REPLICAS,
    "elastic-ep-max-dp-size": _REPLICAS,
    "nnodes": _MULTI_NODE,
    "node-rank": _MULTI_NODE,
    "master-addr": _MULTI_NODE,
    "master-port": _MULTI_NODE,
    "headless": _MULTI_NODE,
    "distributed-executor-backend": _MULTI_NODE,
    "device-ids": _owned(
        "request GPUs with spec.resources.gpus instead", "the GPU device plugin chooses the GPUs"
    ),
    "max-model-len": _owned("use spec.engine.maxModelLen instead"),
    "dtype": _owned("use spec.engine.dtype instead"),
    "quantization": _owned("use spec.engine.quantization instead"),
    "quantization-config": _owned("use spec.engine.quantization instead"),
    "gpu-memory-utilization": _owned("use spec.engine.gpuMemoryUtilization instead"),
    "enable-expert-parallel": _owned("use spec.engine.expertParallel instead"),
    "shutdown-timeout": Denial(
        "the operator sets the drain time from the pod's termination grace period"
    ),
    "disable-log-stats": Denial(
        "the autoscaler and status read vLLM's /metrics, which this switches off"
    ),
    "grpc": Denial("it replaces the HTTP API the gateway and probes use"),
    "grpc-port": Denial("it opens a port that the gateway and the NetworkPolicy do not know"),
    "tokens-only": Denial("it drops the OpenAI API the gateway routes to"),
    "root-path": Denial("it moves the API paths the gateway and probes call"),
    "ssl-keyfile": _TLS,
    "ssl-certfile": _TLS,
    "ssl-ca-certs": _TLS,
    "ssl-cert-reqs": _TLS,
    "ssl-ciphers": _TLS,
    "enable-ssl-refresh": _TLS,
    "api-key": Denial(
        "clients authenticate at the gateway; a key here would sit in the pod spec and vLLM "
        "checks it on some endpoints only"
    ),
    "help": Denial("it prints help and exits instead of serving"),
    "trust-remote-code": Denial(
        "it runs Python code shipped with the model",
        "a ModelPolicy must allow trust-remote-code for this namespace",
        negation_allowed=True,
    ),
    # Files outside the verified model, or writes into the pod.
    "config": Denial("it reads further flags from a file, past this validation"),
    "chat-template": _OUTSIDE_MODEL,
    "tokenizer": _OUTSIDE_MODEL,
    "hf-config-path": _OUTSIDE_MODEL,
    "spec-model": _OUTSIDE_MODEL,
    "lora-modules": _OUTSIDE_MODEL,
    "default-mm-loras": _OUTSIDE_MODEL,
    "mm-encoder-fp8-scale-path": _OUTSIDE_MODEL,
    "engram-config": Denial(
        "it configures n-gram embedding storage outside the verified model, which was not "
        "reviewed for file or network access"
    ),
    "hf-overrides": Denial(
        "it changes the model's configuration after the digest was verified",
        "edit config.json in the model and update spec.model.digest",
    ),
    "download-dir": Denial(
        "weights are never downloaded by the engine",
        "the operator fetches and verifies them from spec.model.source",
    ),
    "model-loader-extra-config": Denial(
        "it passes unchecked settings to weight loaders, some of which stream from remote storage"
    ),
    "allowed-local-media-path": Denial("it lets API requests read files from the pod"),
    "log-config-file": Denial("it reads a logging configuration from a file", "use --log-level"),
    "logging-config": Denial(
        "a logging configuration can send logs to files or remote hosts", "use --log-level"
    ),
    "profiler-config": Denial("it writes profiler traces into the pod"),
    "ray-workers-use-nsight": Denial(
        "it runs the Nsight profiler, which writes reports into the pod"
    ),
    "mm-encoder-fp8-scale-save-path": Denial("it writes a file into the pod"),
    # The network.
    "tool-server": _NETWORK,
    "otlp-traces-endpoint": _NETWORK,
    "allowed-media-domains": _NETWORK,
    "kv-transfer-config": _NETWORK,
    "kv-events-config": _NETWORK,
    "ec-transfer-config": _NETWORK,
    "weight-transfer-config": _NETWORK,
    "hf-token": Denial("it is a Hugging Face Hub credential; engine pods never reach the Hub"),
    "revision": _HUB,
    "code-revision": _HUB,
    "tokenizer-revision": _HUB,
    # Python code loaded by name or path.
    "middleware": _CODE,
    "tool-parser-plugin": _CODE,
    "reasoning-parser-plugin": _CODE,
    "logits-processors": _CODE,
    "io-processor-plugin": _CODE,
    "worker-cls": _CODE,
    "worker-extension-cls": _CODE,
    "scheduler-cls": _CODE,
    "model-class-overrides": _CODE,
    "ec-manager-config": _CODE,
    "additional-config": Denial("it passes unchecked settings to platform plugins"),
    # Request contents.
    "enable-log-requests": Denial(
        "it writes request contents to the pod log, outside the audit trail's controls",
        "audit requests with spec.audit.requests",
        negation_allowed=True,
    ),
    "enable-log-outputs": Denial(
        "it writes generated text to the pod log, outside the audit trail's controls",
        "audit requests with spec.audit.requests",
        negation_allowed=True,
    ),
    "trust-request-chat-template": Denial(
        "it lets any API client run its own chat template on the server",
        negation_allowed=True,
    ),
}

# JSON config flags whose keys may be given, either as `--flag.key value` or inside a JSON
# object value. Other keys of these configs write files (cache_dir, debug_dump_path), load
# code (backend, inductor_passes, reasoning_parser_plugin) or load a draft model (model).
JSON_KEY_ALLOWLIST: Final[Mapping[str, frozenset[str]]] = {
    "compilation-config": frozenset(
        {
            "mode",
            "cudagraph_mode",
            "cudagraph_capture_sizes",
            "max_cudagraph_capture_size",
            "compile_sizes",
        }
    ),
    "speculative-config": frozenset(
        {"method", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"}
    ),
    "structured-outputs-config": frozenset(
        {
            "backend",
            "disable_any_whitespace",
            "disable_additional_properties",
            "reasoning_parser",
            "enable_in_reasoning",
        }
    ),
}


@dataclass(frozen=True, slots=True)
class ValueRule:
    allowed: frozenset[str]
    reason: str


# Flags that are fine with some values only.
VALUE_ALLOWLIST: Final[Mapping[str, ValueRule]] = {
    "load-format": ValueRule(
        frozenset({"auto", "pt", "safetensors", "sharded_state", "mistral", "instanttensor"}),
        "the other formats stream weights from remote storage (tensorizer, runai_streamer, "
        "modelexpress), read them from another process (ipc_cache), write a cache (npcache) "
        "or serve random weights instead of the verified model (dummy)",
    ),
    "generation-config": ValueRule(
        frozenset({"auto", "vllm"}),
        "a folder path would load a generation config from outside the verified model",
    ),
}

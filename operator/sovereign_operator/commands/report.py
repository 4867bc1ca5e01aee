"""`sovereign report NAMESPACE/NAME`: the evidence bundle for one ModelDeployment.

What an auditor asks for, in one document (JSON for machines, Markdown for people): which
model bytes are served (source and digest) on which engine image, which ModelPolicies
select the namespace and what each says about the deployment now, the current
conditions, and every audit record about the deployment, taken from a log whose hash
chain and signed checkpoints were verified first. The bundle is built by pure functions
(`build_bundle`, `render_markdown`) from what the command reads from the cluster and disk.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.model_policy import ModelPolicy
from sovereign_operator.api.problems import InvalidSpec, parse
from sovereign_operator.audit.checkpoint import (
    CONFIGMAP_PUBLIC_KEY,
    AuditKeyError,
    load_public_keys,
)
from sovereign_operator.audit.findings import VerifyResult
from sovereign_operator.audit.record import load_json
from sovereign_operator.audit.segments import chain_order, rotated_segments
from sovereign_operator.audit.verify import verify_files
from sovereign_operator.audit_hooks import DEFAULT_CONFIGMAP, LOG_NAME, MODEL_DEPLOYMENT
from sovereign_operator.commands.options import kubeconfig_option
from sovereign_operator.planning import DEFAULT_ENGINE_IMAGE
from sovereign_operator.policy import NamedPolicy, evaluate, gpu_ceiling
from sovereign_operator.render.options import DEFAULT_OPERATOR_NAMESPACE

GROUP: Final = "sovereign.dev"
VERSION: Final = "v1alpha1"
EXIT_NOT_VERIFIED: Final = 1
EXIT_UNUSABLE_INPUT: Final = 2


# -- the bundle (pure) ------------------------------------------------------------------


def image_identity(image: str) -> dict[str, Any]:
    """An image reference and its digest when it is pinned by one (`repo@sha256:...`)."""
    _, at, digest = image.partition("@")
    return {"reference": image, "digest": digest if at else None, "pinned": bool(at)}


def _about(record: Mapping[str, Any], namespace: str, name: str) -> bool:
    """Whether a record concerns this deployment: it acts on it, or on one of its children."""
    obj = record.get("object") or {}
    if obj.get("kind") == MODEL_DEPLOYMENT and (obj.get("namespace"), obj.get("name")) == (
        namespace,
        name,
    ):
        return True
    owner = (record.get("details") or {}).get("deployment") or {}
    return bool((owner.get("namespace"), owner.get("name")) == (namespace, name))


def history(
    records: Sequence[Mapping[str, Any]], namespace: str, name: str
) -> list[dict[str, Any]]:
    """The records about one deployment, oldest first, each reduced to what a reader needs."""
    entries = []
    for record in records:
        if record.get("type") != "event" or not _about(record, namespace, name):
            continue
        actor = record.get("actor") or {}
        obj = record.get("object") or {}
        entries.append(
            {
                "seq": record["seq"],
                "time": record["time"],
                "actor": {k: actor[k] for k in ("kind", "username", "groups") if k in actor},
                "action": record.get("action"),
                "object": f"{obj.get('kind')}/{obj.get('name')}",
                "uid": obj.get("uid"),
                "generation": obj.get("generation"),
                "outcome": record.get("outcome"),
                "reason": record.get("reason", ""),
                "change": record.get("change", []),
                "model": record.get("model"),
                "hash": record["hash"],
            }
        )
    return entries


def verification(result: VerifyResult) -> dict[str, Any]:
    summary = result.summary
    failure = result.failure
    return {
        "ok": result.ok,
        "files": list(summary.files),
        "records": summary.records,
        "checkpoints": summary.checkpoints,
        "lastSeq": summary.last.seq if summary.last else None,
        "lastCheckpointSeq": summary.last_checkpoint.seq if summary.last_checkpoint else None,
        "keyIds": list(summary.key_ids),
        "failure": str(failure) if failure else None,
        "statements": summary.describe() if result.ok else [],
    }


def build_bundle(
    *,
    md: Mapping[str, Any],
    policies: Sequence[NamedPolicy],
    namespace_labels: Mapping[str, str],
    other_namespace_gpus: int,
    default_image: str,
    records: Sequence[Mapping[str, Any]],
    verified: VerifyResult,
    running_images: Sequence[str] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """The evidence bundle for one ModelDeployment as a JSON-ready dict."""
    meta = md.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    status = md.get("status") or {}
    raw_spec = md.get("spec") or {}
    model = raw_spec.get("model") or {}
    planned = (status.get("plan") or {}).get("image")
    image = planned or (raw_spec.get("engine") or {}).get("image") or default_image
    policy_section: dict[str, Any]
    try:
        spec = parse(ModelDeploymentSpec, raw_spec, prefix="spec")
    except InvalidSpec as invalid:
        policy_section = {"evaluated": False, "error": str(invalid), "applied": []}
    else:
        result = evaluate(
            spec,
            policies,
            namespace_labels=namespace_labels,
            default_image=default_image,
            other_namespace_gpus=other_namespace_gpus,
        )
        policy_section = {
            "evaluated": True,
            "compliant": result.compliant,
            "message": result.message(),
            "applied": [
                {
                    "name": policy,
                    "verdict": "violated" if broken else "compliant",
                    "violations": [
                        {
                            "field": v.field,
                            "rule": v.rule,
                            "message": v.message,
                            "allowed": v.allowed,
                        }
                        for v in broken
                    ],
                }
                for policy, broken in result.by_policy().items()
            ],
        }
    return {
        "kind": "EvidenceBundle",
        "generatedAt": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "deployment": {
            "namespace": namespace,
            "name": name,
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "phase": status.get("phase"),
        },
        "model": {
            "source": model.get("source"),
            "digest": model.get("digest"),
            "servedName": model.get("servedName"),
        },
        "engine": {
            **image_identity(str(image)),
            "runningImageIds": sorted(set(running_images)),
        },
        "policies": policy_section,
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
            for c in status.get("conditions") or []
        ],
        "audit": {
            "verification": verification(verified),
            "history": history(records, namespace, name),
        },
    }


def _cell(value: object) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _change(change: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for item in change[:6]:
        old = json.dumps(item["old"]) if "old" in item else "-"
        new = json.dumps(item["new"]) if "new" in item else "-"
        parts.append(item["path"] if old == new == "-" else f"{item['path']}: {old} -> {new}")
    more = f" (+{len(change) - 6} more)" if len(change) > 6 else ""
    return "; ".join(parts)[:300] + more


def render_markdown(bundle: Mapping[str, Any]) -> str:
    """The bundle for people: the same facts as the JSON, as headed sections and tables."""
    d, m, e = bundle["deployment"], bundle["model"], bundle["engine"]
    v = bundle["audit"]["verification"]
    lines = [
        f"# Evidence bundle: ModelDeployment {d['namespace']}/{d['name']}",
        "",
        (
            f"Generated {bundle['generatedAt']}. uid `{d['uid']}`, generation {d['generation']}, "
            f"observed generation {d['observedGeneration']}, phase {d['phase']}."
        ),
        "",
        "## Model",
        "",
        f"- source: `{m['source']}`",
        f"- digest: `{m['digest']}`",
        f"- served name: {m['servedName'] or d['name']}",
        "",
        "## Engine image",
        "",
        f"- image: `{e['reference']}`",
        f"- pinned by digest: {'yes, `' + e['digest'] + '`' if e['pinned'] else 'no'}",
    ]
    lines += [f"- running image id: `{image}`" for image in e["runningImageIds"]]
    lines += ["", "## Policies", ""]
    policies = bundle["policies"]
    if not policies["evaluated"]:
        lines.append(f"Not evaluated: the spec does not parse ({policies['error']}).")
    elif not policies["applied"]:
        lines.append("No ModelPolicy selects this namespace.")
    else:
        lines += ["| policy | verdict | violations |", "|---|---|---|"]
        for policy in policies["applied"]:
            broken = "; ".join(f"{x['field']}: {x['message']}" for x in policy["violations"])
            lines.append(f"| {_cell(policy['name'])} | {policy['verdict']} | {_cell(broken)} |")
    lines += ["", "## Conditions", "", "| type | status | reason | message |", "|---|---|---|---|"]
    for c in bundle["conditions"]:
        lines.append(
            f"| {c['type']} | {c['status']} | {_cell(c['reason'])} | {_cell(c['message'])} |"
        )
    lines += ["", "## Audit trail", ""]
    if v["ok"]:
        lines.append(
            f"Chain VERIFIED: {v['records']} records, {v['checkpoints']} signed checkpoints "
            f"({', '.join(v['keyIds']) or 'no key'}) in {len(v['files'])} file(s)."
        )
        lines += [f"- {statement}" for statement in v["statements"]]
    else:
        lines.append(f"Chain NOT VERIFIED: {v['failure']}. The history below is not evidence.")
    history_rows = bundle["audit"]["history"]
    lines += [
        "",
        f"{len(history_rows)} records about this deployment:",
        "",
        "| seq | time | actor | action | object | outcome | reason | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in history_rows:
        actor = f"{h['actor'].get('username')} ({h['actor'].get('kind')})"
        lines.append(
            f"| {h['seq']} | {h['time']} | {_cell(actor)} | {h['action']} | {_cell(h['object'])} "
            f"| {_cell(h['outcome'])} | {_cell(h['reason'])} | {_cell(_change(h['change']))} |"
        )
    return "\n".join(lines) + "\n"


# -- reading the cluster and the log --------------------------------------------------


def log_files(audit_dir: Path) -> list[Path]:
    active = audit_dir / LOG_NAME
    files = [*rotated_segments(active), *([active] if active.is_file() else [])]
    return chain_order(files)


def read_records(files: Sequence[Path]) -> list[Mapping[str, Any]]:
    records: list[Mapping[str, Any]] = []
    for path in files:
        with path.open("rb") as handle:
            for line in handle:
                try:
                    value = load_json(line)
                except ValueError:
                    continue  # a damaged line: verification reports it, history skips it
                if isinstance(value, dict):
                    records.append(value)
    return records


def _cluster_inputs(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    custom, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
    md: Any = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", name
    )
    raw_policies: Any = custom.list_cluster_custom_object(GROUP, VERSION, "modelpolicies")
    policies = [
        NamedPolicy.from_resource(ModelPolicy.model_validate(p)) for p in raw_policies["items"]
    ]
    namespace_meta = core.read_namespace(namespace).metadata
    labels = (namespace_meta.labels if namespace_meta else None) or {}
    others: Any = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments"
    )
    other_gpus = 0
    for other in others["items"]:
        if other["metadata"]["name"] == name:
            continue
        try:
            other_gpus += gpu_ceiling(parse(ModelDeploymentSpec, other.get("spec"), prefix="spec"))
        except InvalidSpec:
            continue
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"sovereign.dev/deployment={name},sovereign.dev/role=engine"
    )
    running = [
        status.image_id
        for pod in pods.items
        for status in ((pod.status.container_statuses if pod.status else None) or [])
        if status.image_id
    ]
    return {
        "md": md,
        "policies": policies,
        "namespace_labels": labels,
        "other_namespace_gpus": other_gpus,
        "running_images": running,
    }


def _public_keys(api: k8s.ApiClient, paths: Sequence[Path], operator_ns: str) -> dict[str, Any]:
    if paths:
        keys: dict[str, Any] = {}
        for path in paths:
            keys.update(load_public_keys(path.read_bytes(), source=str(path)))
        return keys
    configmap = k8s.CoreV1Api(api).read_namespaced_config_map(DEFAULT_CONFIGMAP, operator_ns)
    pem = (configmap.data or {}).get(CONFIGMAP_PUBLIC_KEY, "")
    return load_public_keys(pem.encode(), source=f"ConfigMap {operator_ns}/{DEFAULT_CONFIGMAP}")


@click.command("report")
@click.argument("target", metavar="NAMESPACE/NAME")
@kubeconfig_option("Read the cluster with this kubeconfig (default: in-cluster).")
@click.option(
    "--audit-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The operator's audit log directory (audit.log and its rotated files), or a copy.",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key(s) of the checkpoints; default: the operator's published ConfigMap.",
)
@click.option(
    "--operator-namespace",
    default=DEFAULT_OPERATOR_NAMESPACE,
    show_default=True,
    help="Where the public-key ConfigMap is, when --public-key is not given.",
)
@click.option(
    "--engine-image",
    default=DEFAULT_ENGINE_IMAGE,
    show_default=True,
    help="The operator's default engine image (for specs and plans that name none).",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write NAMESPACE-NAME.json and .md here; without it, print to stdout.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["markdown", "json"]),
    default="markdown",
    show_default=True,
    help="What to print when --out-dir is not given.",
)
def report_command(
    *,
    target: str,
    kubeconfig: Path | None,
    audit_dir: Path,
    public_keys: tuple[Path, ...],
    operator_namespace: str,
    engine_image: str,
    out_dir: Path | None,
    output_format: str,
) -> None:
    """Evidence bundle for one ModelDeployment: model, image, policies, conditions, audit.

    Exit 0 when the audit chain verifies, 1 when it does not (the bundle is still written
    and says so), 2 when the inputs cannot be read.
    """
    namespace, slash, name = target.partition("/")
    if not slash or not namespace or not name:
        raise click.BadParameter("give the deployment as NAMESPACE/NAME", param_hint="target")
    files = log_files(audit_dir)
    if not files:
        raise click.BadParameter(f"no {LOG_NAME}* files in {audit_dir}", param_hint="--audit-dir")
    if kubeconfig is not None:
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = k8s.ApiClient()
    try:
        keys = _public_keys(api, public_keys, operator_namespace)
        inputs = _cluster_inputs(api, namespace, name)
    except (ApiException, AuditKeyError) as error:
        reason = f"{error.status} {error.reason}" if isinstance(error, ApiException) else error
        click.echo(f"error: {reason}", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)
    finally:
        api.close()
    verified = verify_files(files, keys)
    bundle = build_bundle(
        **inputs,
        default_image=engine_image,
        records=read_records(files),
        verified=verified,
    )
    as_json = json.dumps(bundle, indent=2) + "\n"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"{namespace}-{name}"
        Path(f"{stem}.json").write_text(as_json)
        Path(f"{stem}.md").write_text(render_markdown(bundle))
        click.echo(f"wrote {stem}.json and {stem}.md")
    else:
        click.echo(as_json if output_format == "json" else render_markdown(bundle), nl=False)
    sys.exit(0 if verified.ok else EXIT_NOT_VERIFIED)

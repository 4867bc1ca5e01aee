"""`sovereign render -f FILE`: print the child manifests of ModelDeployments, no cluster needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from sovereign_operator.api.base import API_VERSION
from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import FieldProblem, InvalidSpec, parse
from sovereign_operator.manifests import dump_documents, load_file
from sovereign_operator.planning import ClusterFacts, plan
from sovereign_operator.render import RenderOptions, render_children
from sovereign_operator.render.options import DEFAULT_OPERATOR_NAMESPACE


def render_document(
    document: Any, facts: ClusterFacts, options: RenderOptions
) -> list[dict[str, Any]]:
    """The children of one ModelDeployment document, or InvalidSpec listing every problem."""
    if not isinstance(document, dict):
        raise InvalidSpec([FieldProblem("(root)", "a document must be a mapping")])
    metadata = document.get("metadata") or {}
    problems = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(FieldProblem("apiVersion", f"must be {API_VERSION}"))
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        problems.append(FieldProblem("metadata.name", "required field is missing"))
    try:
        spec = parse(ModelDeploymentSpec, document.get("spec"), prefix="spec")
    except InvalidSpec as invalid:
        problems.extend(invalid.problems)
    if problems:
        raise InvalidSpec(problems)
    namespace = str(metadata.get("namespace") or "default")
    serving_plan = plan(str(name), namespace, spec, facts)
    return render_children(serving_plan, options, owner=None)


@click.command("render")
@click.option(
    "-f",
    "--filename",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML file with one or more ModelDeployment documents.",
)
@click.option(
    "--gpus-per-node",
    type=click.IntRange(1, 64),
    default=None,
    help="GPUs a node offers, when the spec does not say (default: 8).",
)
@click.option(
    "--operator-namespace",
    default=DEFAULT_OPERATOR_NAMESPACE,
    show_default=True,
    help="The operator's namespace; engine NetworkPolicies admit metrics scrapes from it.",
)
def render_command(path: Path, gpus_per_node: int | None, operator_namespace: str) -> None:
    """Print the Kubernetes objects a ModelDeployment becomes."""
    try:
        documents = load_file(path)
    except yaml.YAMLError as error:
        click.echo(f"{path}: not valid YAML: {error}", err=True)
        sys.exit(2)
    facts = ClusterFacts(default_gpus_per_node=gpus_per_node or 8)
    options = RenderOptions(operator_namespace=operator_namespace)
    rendered: list[dict[str, Any]] = []
    failed = False
    deployments = [
        d for d in documents if isinstance(d, dict) and d.get("kind") == "ModelDeployment"
    ]
    if not deployments:
        click.echo(f"{path}: no ModelDeployment documents found", err=True)
        sys.exit(2)
    for document in deployments:
        name = (document.get("metadata") or {}).get("name", "<unnamed>")
        try:
            rendered.extend(render_document(document, facts, options))
        except InvalidSpec as invalid:
            failed = True
            click.echo(f"ModelDeployment {name} is invalid:", err=True)
            for problem in invalid.problems:
                click.echo(f"  {problem}", err=True)
    if failed:
        sys.exit(1)
    click.echo(dump_documents(rendered), nl=False)

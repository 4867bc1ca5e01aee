"""Start-up settings: our own names everywhere, bounded watches, quiet event posting."""

from __future__ import annotations

import logging

import kopf
import pytest

from sovereign_operator.handlers.startup import configure
from sovereign_operator.settings import OperatorConfig, WatchTimeouts

pytestmark = pytest.mark.unit


def configured(config: OperatorConfig | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure(settings, config or OperatorConfig())
    return settings


def test_finalizer_and_annotations_are_ours_not_kopfs() -> None:
    settings = configured()
    assert settings.persistence.finalizer == "sovereign.dev/finalizer"
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert progress.prefix == diffbase.prefix == "operator.sovereign.dev"
    assert "kopf" not in progress.prefix


def test_every_watch_is_bounded() -> None:
    settings = configured(
        OperatorConfig(watch=WatchTimeouts(server=120, client=150, inactivity=45))
    )
    watching = settings.watching
    assert (watching.server_timeout, watching.client_timeout) == (120, 150)
    assert watching.inactivity_timeout == 45
    assert watching.connect_timeout is not None
    assert isinstance(watching.server_timeout, int)  # the API server wants whole seconds


def test_only_our_children_and_pods_are_streamed() -> None:
    selectors = dict(configured().watching.label_selectors.items())
    assert set(selectors.values()) == {"app.kubernetes.io/managed-by=sovereign-operator"}
    assert len(selectors) == 7  # six child kinds and pods


def test_events_are_posted_on_purpose_only_and_work_is_bounded() -> None:
    settings = configured(OperatorConfig(worker_limit=123))
    assert settings.posting.loggers is False
    assert settings.posting.level == logging.INFO
    assert settings.posting.reporting_component == "sovereign-operator"
    assert settings.queueing.worker_limit == 123
    assert settings.scanning.disabled
    assert settings.peering.standalone

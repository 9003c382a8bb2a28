"""kopf's settings as the operator pins them, and its handlers' retry limits. No cluster."""

from __future__ import annotations

import logging

import kopf

from exportd.contract import exportrequest as er
from exportd.operator.connection import Cluster
from exportd.operator.handlers import pin_kopf_settings, register
from exportd.settings import OperatorSettings


def pinned() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    pin_kopf_settings(settings)
    return settings


def test_finalizer_and_progress_live_under_the_exportd_group() -> None:
    settings = pinned()
    assert settings.persistence.finalizer == "exportd.dev/finalizer"
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "exportd.dev"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "exportd.dev"


def test_watches_time_out_regularly_and_only_our_jobs_are_watched() -> None:
    settings = pinned()
    watching = settings.watching
    assert watching.server_timeout is not None and watching.client_timeout is not None
    assert watching.server_timeout < watching.client_timeout
    assert watching.inactivity_timeout > 60  # longer than the apiserver's bookmark period
    [selector] = list(watching.label_selectors.values())
    assert selector == f"{er.LABEL_MANAGED_BY}=exportd-operator"


def test_one_standalone_replica_and_quiet_events() -> None:
    settings = pinned()
    assert settings.peering.standalone is True
    assert settings.posting.level == logging.WARNING
    assert settings.networking.request_timeout == 60


def test_every_retried_handler_has_a_timeout_and_a_retry_limit() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, OperatorSettings(), Cluster(server="http://127.0.0.1:1"))
    changing = list(registry._changing.get_all_handlers())
    assert {handler.reason for handler in changing if handler.reason} >= {"create", "delete"}
    for handler in changing:
        assert handler.timeout is not None and handler.retries is not None, handler.id
    activities = {
        str(h.activity and h.activity.value) for h in registry._activities.get_all_handlers()
    }
    assert {"authentication", "startup", "cleanup", "probe"} <= activities
    ours = [h for h in registry._activities.get_all_handlers() if h.id in ("login", "start")]
    assert len(ours) == 2
    for handler in ours:
        if handler.activity and handler.activity.value in ("authentication", "startup"):
            assert handler.retries is not None, handler.id  # a dead cluster ends the operator
    watched = {str(handler.selector) for handler in registry._watching.get_all_handlers()}
    assert len(watched) == 2  # requests and Jobs: every change wakes the controller

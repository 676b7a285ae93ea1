"""Settings of the cluster source: every field has a default and the reason for it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    # the API server ends each watch after this long (plus up to a quarter more, so that many
    # routers do not reconnect in step); the watch then resumes where it was, without a list
    timeout_s: int = 60
    # a list, get or write without an answer after this long has failed
    request_timeout_s: float = 10.0
    # after a failure, wait this long before trying again, doubling up to backoff_max_s (jittered);
    # the cap bounds how long the router lags behind an API server that has just come back
    backoff_s: float = 0.25
    backoff_max_s: float = 4.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSettings:
    # one router replica writes status; the others follow this coordination.k8s.io Lease
    name: str = "inference-router-status"
    # a holder that has not renewed for this long has lost the lease (client-go's default)
    duration_s: float = 15.0
    # how often the holder renews and the others look whether it is free
    retry_s: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSettings:
    # the namespace to watch; None watches every namespace (RBAC must allow it)
    namespace: str | None = None
    # a kubeconfig file, for running outside the cluster; None uses the pod's service account
    kubeconfig: str | None = None
    # a change is applied once events stop arriving for this long: a burst makes one routing table
    settle_s: float = 0.05
    # a Service or Secret that a change starts to reference gets this long to be listed before
    # the change is applied without it (a change never waits forever on one forbidden namespace)
    reference_sync_s: float = 3.0
    # a Secret followed for the router itself (the TLS certificate of --ssl-secret) must be listed
    # within this long at start, or the start fails saying why
    first_list_timeout_s: float = 30.0
    # the scheme and host put before /api/v1/endpoint/<name>/score in status.scoringUri
    # ("" writes the path alone)
    scoring_base_url: str = ""
    watch: WatchSettings = field(default_factory=WatchSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)

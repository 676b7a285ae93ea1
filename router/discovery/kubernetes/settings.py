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
    # after a failure, wait this long before trying again, doubling up to backoff_max_s (jittered,
    # and at least the server's Retry-After): the cap bounds how long the router lags behind an API
    # server that has just come back, and is long enough that routers do not all come back at once
    backoff_s: float = 0.25
    backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSettings:
    # one router replica writes status; the others follow this coordination.k8s.io Lease
    name: str = "inference-router-status"
    # a holder that has not renewed for this long has lost the lease (client-go's default)
    duration_s: float = 15.0
    # a holder stops writing this long after the start of its last successful renewal: shorter than
    # duration_s, so it has stopped before a follower may take over (client-go's default)
    renew_deadline_s: float = 10.0
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
    # a namespace's slices or a Secret that a change starts to reference gets this long (from the
    # start of its own watch) to be listed before the change is applied without it; a refusal
    # (403) ends the wait at once (a change never waits forever on one forbidden namespace)
    reference_sync_s: float = 3.0
    # the same for the first state, after which the router reports ready; and a Secret followed
    # for the router itself (the TLS certificate of --ssl-secret) must be listed within this
    # long at start, or the start fails saying why
    first_list_timeout_s: float = 30.0
    # EndpointSlice addresses that are loopback or the router's own are refused unless this is set
    # (replicas on the router's machine: tests, a one-host demo); link-local ones always are
    allow_loopback_replicas: bool = False
    # a pod listed in an IPv4 and an IPv6 slice (dual-stack Service) is one replica, at its address
    # of this family (of the other when it has none of this one)
    address_family: str = "IPv4"
    # the scheme and host put before /api/v1/endpoint/<name>/score in status.scoringUri
    # ("" writes the path alone)
    scoring_base_url: str = ""
    watch: WatchSettings = field(default_factory=WatchSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    # the router that holds this one scales the deployments of scaleSettings type target_utilization
    autoscale_lease: LeaseSettings = field(default_factory=lambda: LeaseSettings(name="inference-router-autoscaler"))

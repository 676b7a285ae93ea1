"""inference-router: the front door for ML models served over HTTP.

A request's path through the package, top to bottom:

- `cli` parses the command line; `server` runs the lifecycle (load the first
  configuration, bind, serve, drain on SIGTERM) and `admin` answers health checks,
  metrics and tokens on a separate port (loopback unless `--admin-host` says more).
- `discovery` turns a YAML file, or Kubernetes watches (`discovery.kubernetes`, the
  only user of the `kubernetes` client), into validated, immutable resources
  (`model`); an invalid document is refused with a message naming its field, and
  the last good state keeps serving.
- `balancing` builds from those resources one routing table per change (endpoints,
  traffic split, replicas) and makes every routing decision without I/O.
- `front` is the scoring data plane: an HTTP/1.1 server on asyncio protocols and
  httptools. It reads a request head once, authenticates, resolves the deployment
  and replica, and streams the exchange both ways.
- `proxy` is the only code that talks HTTP to model replicas: pooled keep-alive
  connections, answers parsed with httptools, failures turned into `errors`.
- `tls` checks certificate pairs (with `cryptography`, only there), builds the
  hardened server context, and rotates it for new handshakes when the files or the
  Secret change; `tls.certs` is the `certs` command's tooling.
- `peers` lets several routers act as one: each replica's slots split among them by
  sorted identity and handed over through an authenticated peer port, membership by
  heartbeats (`--peers`) or one Kubernetes Lease per router (`--peer-service`).
- `autoscale` sizes `target_utilization` deployments from the demand the balancers
  count (in flight plus queued), by a pure decision; in a cluster the router holding
  the autoscaler's Lease writes the size through `discovery.kubernetes.scaling`.
- `metrics` (the only user of `prometheus_client`), `access_log` and `tracing` hold
  what the router reports; `front.telemetry` feeds them once per finished request,
  cheaply, and formats, writes and exports off the request path.

Lower layers never import higher ones:
cli → server → {front, admin, peers} → proxy → {discovery, balancing, autoscale, tls, metrics, access_log,
tracing}
→ {model, errors, settings}.
"""

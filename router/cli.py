"""The `inference-router` command: serve, demo, sample-model, certs, token.

Run `inference-router COMMAND --help` for a command's flags; every flag of `serve`
is also a `ROUTER_*` variable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata

import uvloop

from router import logs, sample_model, settings
from router.errors import ConfigError
from router.tls import certs


def _serve(args: argparse.Namespace) -> int:
    from router.discovery.file import FileSource
    from router.discovery.source import Source
    from router.server import RouterServer

    try:
        config = settings.from_arguments(args)
        if bool(args.config) == bool(args.kubernetes):
            raise ConfigError(["serve needs one of --config FILE (a YAML file of OnlineEndpoint, "
                               "OnlineDeployment and Secret documents) or --kubernetes"])
        if args.kubernetes:
            from router.discovery.kubernetes import KubernetesSettings, KubernetesSource
            from router.discovery.kubernetes.settings import LeaseSettings

            source: Source = KubernetesSource(KubernetesSettings(
                namespace=config.watch_namespace or args.namespace, kubeconfig=args.kubeconfig,
                allow_loopback_replicas=config.allow_loopback_replicas,
                address_family=config.replica_address_family,
                lease=LeaseSettings(name=config.status_lease),
                autoscale_lease=LeaseSettings(name=config.autoscale_lease),
                scoring_base_url=f"https://{config.ssl_cname}" if config.ssl_cname else ""))
        else:
            source = FileSource(args.config, poll_interval=config.config_poll_interval)
        server = RouterServer(config, source)
        return uvloop.run(server.run())
    except ConfigError as exc:
        logs.event("start.refused", level=logging.ERROR, problems=exc.problems)
        print("inference-router: " + "\n  ".join(["cannot start:", *exc.problems]), file=sys.stderr)
        return 2


def _token(args: argparse.Namespace) -> int:
    """Sign a token locally, from the endpoint's Secret in a resources file."""
    import json

    from router import tokens
    from router.discovery.documents import load_file

    try:
        resources = load_file(args.config)
        endpoint = next((e for e in resources.endpoints if e.name == args.endpoint), None)
        if endpoint is None:
            raise ConfigError([f"--endpoint: no OnlineEndpoint {args.endpoint!r} in {args.config}"])
        if endpoint.auth_mode != "aml_token":
            raise ConfigError([f"endpoint {args.endpoint!r} uses authMode {endpoint.auth_mode!r}: it takes keys"])
        secret = next((s for s in resources.secrets if s.namespace == endpoint.namespace
                       and s.name == endpoint.keys_secret_ref), None)
        key = tokens.signing_key(secret.data, endpoint.namespace, endpoint.name) if secret else None
        if key is None:
            raise ConfigError([f"endpoint {args.endpoint!r}: its Secret has no tokenSigningKey or primaryKey"])
        issued = tokens.issue(endpoint.name, key, tokens.parse_ttl(args.ttl))
        print(issued["accessToken"] if args.raw else json.dumps(issued))
        return 0
    except ConfigError as exc:
        print("inference-router token: " + "; ".join(exc.problems), file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from router import demo

    return demo.run(args)


def _version() -> str:
    try:
        return metadata.version("inference-router")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inference-router", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the resources of a YAML file or of a cluster",
        usage="%(prog)s (--config FILE | --kubernetes) [flags below]",
        description="Serve the resources of a YAML file (--config) or of a cluster (--kubernetes). Each setting "
                    "below is a flag or a variable ROUTER_<NAME>; a flag wins over its variable.")
    groups = settings.add_arguments(serve)
    cluster = groups["resources and cluster"]
    cluster.add_argument("--config", metavar="FILE", help="YAML file of OnlineEndpoint, OnlineDeployment and Secret "
                         "documents, reloaded when it changes (default: none; this or --kubernetes)")
    cluster.add_argument("--kubernetes", action="store_true", help="watch the resources in a cluster instead "
                         "(default: off)")
    cluster.add_argument("--namespace", metavar="NS", help="the same as --watch-namespace, for older command lines "
                         "(default: all)")
    cluster.add_argument("--kubeconfig", metavar="FILE", help="with --kubernetes, from outside the cluster: this "
                         "kubeconfig (default: the pod's service account)")
    serve.set_defaults(func=_serve)

    demo = commands.add_parser("demo", help="sample models and the router on loopback, no cluster")
    demo.add_argument("--smoke", action="store_true", help="send checked requests, exit 0 if all pass, 1 if not, "
                      "on free ports unless --port or --admin-port is given (default: off, serve until Ctrl-C)")
    demo.add_argument("--port", type=settings.spec("port").parse_flag,
                      help="router port, 0: any free one (default: ROUTER_PORT, else 8080)")
    demo.add_argument("--admin-port", type=settings.spec("admin_port").parse_flag,
                      help="admin port, 0: any free one (default: ROUTER_ADMIN_PORT, else 9090)")
    demo.set_defaults(func=_demo)

    model = commands.add_parser("sample-model", help="a sample scoring server, for demos and tests",
                                description=sample_model.SUMMARY)
    sample_model.add_arguments(model)
    model.set_defaults(func=sample_model.run)

    certs.add_arguments(commands.add_parser("certs", help="dev certificates, checks, Secret manifests"))

    token = commands.add_parser("token", help="a short-lived token for an aml_token endpoint")
    token.add_argument("--endpoint", required=True, help="the endpoint the token opens (required)")
    token.add_argument("--config", required=True, metavar="FILE", help="resources file holding its Secret "
                       "(required; in a cluster, use the admin API: POST /token/{endpoint} with a key)")
    token.add_argument("--ttl", default="1h", help="lifetime: 30m, 1h, ... up to 24h (default: 1h)")
    token.add_argument("--raw", action="store_true", help="print the bare token, for Authorization: Bearer "
                       "$(...) (default: a JSON object with accessToken and its expiry)")
    token.set_defaults(func=_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

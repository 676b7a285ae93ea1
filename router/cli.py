"""The `inference-router` command: serve, demo, sample-model."""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop

from router import logs, sample_model, settings
from router.errors import ConfigError


def _serve(args: argparse.Namespace) -> int:
    from router.discovery.file import FileSource
    from router.server import RouterServer

    try:
        config = settings.from_arguments(args)
        if not args.config:
            raise ConfigError(["serve needs --config FILE (a YAML file of OnlineEndpoint, "
                               "OnlineDeployment and Secret documents)"])
        server = RouterServer(config, FileSource(args.config, poll_interval=config.config_poll_interval))
        return uvloop.run(server.run())
    except ConfigError as exc:
        logs.event("start.refused", level=logging.ERROR, problems=exc.problems)
        print("inference-router: " + "\n  ".join(["cannot start:", *exc.problems]), file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from router import demo

    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inference-router", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the resources of a YAML file")
    serve.add_argument("--config", metavar="FILE", help="OnlineEndpoint, OnlineDeployment, Secret documents")
    settings.add_arguments(serve)
    serve.set_defaults(func=_serve)

    demo = commands.add_parser("demo", help="sample models and the router on loopback, no cluster")
    demo.add_argument("--smoke", action="store_true", help="send checked requests, exit 0 if all pass")
    demo.add_argument("--port", type=int, default=8080, help="router port (0: any free port)")
    demo.add_argument("--admin-port", type=int, default=9090, help="admin port (0: any free port)")
    demo.set_defaults(func=_demo)

    model = commands.add_parser("sample-model", help="a sample scoring server")
    sample_model.add_arguments(model)
    model.set_defaults(func=sample_model.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

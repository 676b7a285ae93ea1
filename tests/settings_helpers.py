"""Router settings as the command line makes them, for the tests of settings in any package."""

from __future__ import annotations

import argparse

import pytest

from router.errors import ConfigError
from router.settings import RouterSettings, add_arguments, from_arguments

INSECURE = {"ROUTER_ALLOW_INSECURE_CONNECTIONS": "true"}


def settings(*flags: str, environ: dict[str, str] | None = None) -> RouterSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(list(flags)), {} if environ is None else environ)


def refused(*flags: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(*flags, environ=environ)
    assert caught.value.problems, "a ConfigError lists its problems"
    return "\n".join(caught.value.problems)

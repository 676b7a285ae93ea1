"""The peer settings: flags and variables, each refusal naming its field; the key from a variable or a file."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from router.errors import ConfigError
from router.peers.membership import own_address, parse_peers
from router.peers.start import open_group, peer_key
from router.settings import RouterSettings
from tests.settings_helpers import INSECURE, refused, settings

KEY = {**INSECURE, "ROUTER_PEER_KEY": "peer-key-0123456789abcdef"}


def test_one_router_by_default() -> None:
    got = settings(environ=INSECURE)
    assert (got.peers, got.peer_service, got.peer_port, got.peer_timeout) == ("", "", 9091, 5.0)
    assert got.peer_key is None and got.peer_key_file is None


def test_the_peer_settings_from_flags_and_variables() -> None:
    got = settings("--peers", "10.0.0.1:9091, 10.0.0.2:9091", "--peer-timeout", "2.5", "--peer-port", "7000",
                   environ=KEY)
    assert got.peer_addresses == ("10.0.0.1:9091", "10.0.0.2:9091")
    assert (got.peer_timeout, got.peer_port, got.peer_key) == (2.5, 7000, "peer-key-0123456789abcdef")
    assert "peer-key" not in repr(got)  # the key never shows in a log of the settings


@pytest.mark.parametrize(("flags", "environ", "named"), [
    (("--peers", "10.0.0.1:9091"), INSECURE, "--peer-key: routers that share slots need a shared key"),
    (("--peers", "10.0.0.1:9091"), {**INSECURE, "ROUTER_PEER_KEY": "short"}, "--peer-key: must be at least 16"),
    # the rule the key file is read with too: refused at start, not only when the peer port opens
    (("--peers", "10.0.0.1:9091"), {**INSECURE, "ROUTER_PEER_KEY": "peer key 0123456789abcdef"},
     "--peer-key: must be at least 16 printable ASCII characters without spaces"),
    (("--peers", "10.0.0.1:9091"), {**INSECURE, "ROUTER_PEER_KEY": "peer-key-0123456789abcdéf"},
     "--peer-key: must be at least 16 printable ASCII characters without spaces"),
    (("--peers", "10.0.0.1:9091", "--peer-key-file", "/k"), KEY, "--peer-key and --peer-key-file"),
    (("--peers", "10.0.0.1", ), KEY, "--peers: '10.0.0.1' is not HOST:PORT"),
    (("--peers", "10.0.0.1:http", ), KEY, "--peers: '10.0.0.1:http' is not HOST:PORT"),
    (("--peers", "10.0.0.1:\u00b2", ), KEY, "--peers: '10.0.0.1:\u00b2' is not HOST:PORT"),  # a digit int() refuses
    (("--peers", "10.0.0.1:9091", "--peer-service", "routers"), KEY, "--peers and --peer-service"),
    (("--peer-service", "routers", "--peer-timeout", "2"), KEY, "--peer-timeout: must be at least 3 s"),
    (("--peers", "10.0.0.1:9091", "--peer-timeout", "0"), KEY, "--peer-timeout: must be at least 0.5 s"),
    ((), {**KEY, "ROUTER_PEER_PORT": "70000"}, "ROUTER_PEER_PORT: expected an integer from 0 to 65535"),
])
def test_a_bad_peer_setting_is_named(flags: tuple[str, ...], environ: dict[str, str], named: str) -> None:
    assert named in refused(*flags, environ=environ)


def test_the_key_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "peer-key"
    path.write_text("from-a-file-0123456789\n")
    assert peer_key(RouterSettings(allow_insecure_connections=True, peers="a:1", peer_key_file=str(path))) \
        == b"from-a-file-0123456789"
    for bad in ("short\n", "peer-key-\x01-0123456789\n"):  # a control character would break the header
        path.write_text(bad)
        with pytest.raises(ConfigError, match="peer_key_file: the key must be at least 16"):
            peer_key(RouterSettings(allow_insecure_connections=True, peers="a:1", peer_key_file=str(path)))
    with pytest.raises(ConfigError, match="peer_key_file: cannot read"):
        peer_key(RouterSettings(allow_insecure_connections=True, peers="a:1", peer_key_file=str(tmp_path / "no")))


def test_a_router_knows_itself_by_its_host_else_by_pod_ip() -> None:
    assert own_address("10.0.0.7", 9091, {}) == "10.0.0.7:9091"
    assert own_address("0.0.0.0", 9091, {"POD_IP": "10.1.2.3"}) == "10.1.2.3:9091"
    assert own_address("::", 9091, {"POD_IP": "fd00::5"}) == "[fd00::5]:9091"
    with pytest.raises(ConfigError, match="peers: this router's own peer address is unknown"):
        own_address("0.0.0.0", 9091, {})


def test_peer_lists_are_normalized() -> None:
    assert parse_peers("10.0.0.1:9091,10.0.0.1:9091, [fd00::1]:9091") == ("10.0.0.1:9091", "[fd00::1]:9091")
    with pytest.raises(ConfigError, match=re.escape("peers: '10.0.0.1:\u00b2' is not HOST:PORT")):
        parse_peers("10.0.0.1:\u00b2")


def test_a_peer_service_needs_a_cluster() -> None:
    got = RouterSettings(allow_insecure_connections=True, host="10.0.0.1", peer_service="routers",
                         peer_key="peer-key-0123456789abcdef")
    with pytest.raises(ConfigError, match="peer_service: needs --kubernetes"):
        asyncio.run(open_group(got, dict))

"""Scoring decisions without sockets: request heads, and resolving them against a routing table."""

from __future__ import annotations

import pytest

from router.balancing.table import RoutingTable
from router.errors import Unauthorized
from router.front.scoring import RequestHead, resolve
from tests.balancing.resources import PRIMARY, blue_green

ROTATED = "nZ3xC7vB1nM5qW9eR2tY6uI0oP4aS8dF"


def test_keys_are_looked_up_as_the_table_knows_them_and_forgotten_when_they_change() -> None:
    def head(key: bytes, scheme: bytes = b"Bearer ") -> RequestHead:
        return RequestHead(b"POST", b"/api/v1/endpoint/mnist/score", [(b"Authorization", scheme + key)], True)

    table = RoutingTable.build(blue_green())
    resolve(table, head(PRIMARY.encode()))
    resolve(table, head(PRIMARY.encode(), b"bearer   "))  # another spelling: compared with the keys instead
    assert b"Bearer " + PRIMARY.encode() in table.endpoints["mnist"].authorizations
    with pytest.raises(Unauthorized):
        resolve(table, head(PRIMARY.encode()[:-1] + b"b"))
    rotated = RoutingTable.build(blue_green(keys={"primaryKey": ROTATED}), table)
    with pytest.raises(Unauthorized):
        resolve(rotated, head(PRIMARY.encode()))
    resolve(rotated, head(ROTATED.encode()))


@pytest.mark.parametrize(("values", "kept", "bad"), [
    ([b"first", b"second"], b"second", False),
    ([b"not valid!", b"valid-one"], b"valid-one", False),  # the last one counts
    ([b"valid-one", b"not valid!"], b"", True),
])
def test_the_last_client_request_id_counts(values: list[bytes], kept: bytes, bad: bool) -> None:
    head = RequestHead(b"POST", b"/", [(b"x-ms-client-request-id", v) for v in values], True)
    assert (head.client_request_id, head.bad_client_request_id) == (kept, bad)

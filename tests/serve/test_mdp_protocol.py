"""MDP wire helpers: frame validation never raises anything but ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.errors import ProtocolError
from tpcflow.serve.mdp import protocol as P

TOKENS = [b"", P.CLIENT_HEADER, P.WORKER_HEADER, *P.COMMAND_NAMES, b"svc", b"mmi.service", P.pack_rid(3)]


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.sampled_from(TOKENS) | st.binary(max_size=10), max_size=8))
def test_parse_inbound_accepts_or_raises_protocol_error(frames):
    try:
        msg = P.parse_inbound([b"id", *frames])
    except ProtocolError:
        return
    assert msg.header in (P.CLIENT_HEADER, P.WORKER_HEADER) and msg.command in P.COMMAND_NAMES


def test_valid_messages_parse():
    req = P.parse_inbound([b"c1", b"", P.CLIENT_HEADER, P.REQUEST, b"seg", P.pack_rid(9), b"body"])
    assert (req.service, P.split_rid(req.body)) == (b"seg", (9, [b"body"]))
    fin = P.parse_inbound([b"w1", b"", P.WORKER_HEADER, P.FINAL, b"c1", b"", b"r"])
    assert (fin.client, fin.body) == (b"c1", [b"r"])
    with pytest.raises(ProtocolError, match="printable"):
        P.parse_inbound([b"w1", b"", P.WORKER_HEADER, P.READY, b"bad name"])
    with pytest.raises(ProtocolError, match="REQUEST"):
        P.parse_inbound([b"c1", b"", P.CLIENT_HEADER, P.FINAL, b"seg"])


def test_rid_and_error_frames_round_trip():
    for rid in (0, 1, 2**64 - 1):
        assert P.split_rid([P.pack_rid(rid), b"x"]) == (rid, [b"x"])
    assert P.split_rid([b"not a rid", b"x"]) == (None, [b"not a rid", b"x"])
    assert P.parse_error(P.error_body(404, "no worker")) == (404, "no worker")
    assert P.parse_error([b"ordinary", b"reply", b"frames"]) is None


def test_service_names_must_be_printable_ascii():
    assert P.validate_service_name("cosmic_tagger") == b"cosmic_tagger"
    assert P.validate_service_name(b"a" * 255) == b"a" * 255
    for bad in ["", "two words", "a" * 256, b"\x7f", "neutrino_é", b"tab\there"]:
        with pytest.raises(ProtocolError, match="printable ASCII"):
            P.validate_service_name(bad)

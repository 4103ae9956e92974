"""Naming rules: prefixes, veth names within IFNAMSIZ, ownership checks, MACs, settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orch.errors import ValidationError
from orch.overlay import names
from orch.overlay.settings import NetworkSettings, bridge_subnet_for

prefixes = st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z")
endpoint_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z")


@given(prefixes, endpoint_ids, st.sampled_from(["bridge", "net1", "frontend"]), st.integers(0, 5))
def test_veth_names_fit_and_are_recognised(prefix: str, eid: str, net: str, salt: int) -> None:
    name = names.veth_name(prefix, eid, net, salt)
    assert len(name) == names.IFNAMSIZ
    assert names.is_veth_name(prefix, name)
    assert name == names.veth_name(prefix, eid, net, salt)  # deterministic


@given(prefixes, prefixes, endpoint_ids)
def test_no_agent_claims_another_agents_objects(a: str, b: str, eid: str) -> None:
    if a == b:
        return
    assert not names.is_veth_name(a, names.veth_name(b, eid, "bridge"))
    assert names.endpoint_of_netns(a, names.netns_name(b, eid)) is None


def test_bridge_is_never_taken_for_a_veth() -> None:
    assert not names.is_veth_name("orch", names.bridge_name("orch"))
    assert not names.is_veth_name("orcht1a2b", names.bridge_name("orcht1a2b"))


def test_salt_changes_the_name() -> None:
    assert names.veth_name("orch", "t1", "bridge", 0) != names.veth_name("orch", "t1", "bridge", 1)


def test_netns_name_round_trip() -> None:
    assert names.endpoint_of_netns("orch", names.netns_name("orch", "task-1.a")) == "task-1.a"
    assert names.endpoint_of_netns("orch", "orch-") is None
    assert names.endpoint_of_netns("orch", "orchhost") is None


@pytest.mark.parametrize("bad", ["", "Orch", "1orch", "orch-a", "orch12345x", "or_ch"])
def test_bad_prefixes(bad: str) -> None:
    with pytest.raises(ValidationError, match="prefix"):
        names.check_prefix(bad)


@pytest.mark.parametrize("bad", ["", "-a", "a/b", "a b", "x" * 129])
def test_bad_endpoint_ids(bad: str) -> None:
    with pytest.raises(ValidationError, match="endpoint id"):
        names.check_endpoint_id(bad)


def test_settings_defaults_and_validation() -> None:
    s = NetworkSettings(prefix="orch7")
    assert s.bridge == "orch7-br"
    assert str(s.subnet) == "10.213.0.0/24"
    assert bridge_subnet_for(9) == "10.213.9.0/24"
    with pytest.raises(ValidationError, match="subnet"):
        NetworkSettings(bridge_subnet="10.0.0.0/31")
    with pytest.raises(ValidationError, match="subnet"):
        NetworkSettings(bridge_subnet="nonsense")
    with pytest.raises(ValidationError, match="mtu"):
        NetworkSettings(mtu=100)
    with pytest.raises(ValidationError, match="prefix"):
        NetworkSettings(prefix="with-dash")

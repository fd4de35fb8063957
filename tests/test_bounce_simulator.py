"""Tests for relay.bounces.simulator: the mailbox simulator's outcome per recipient."""

from __future__ import annotations

import pytest

from relay.bounces.parse import Kind, suppresses
from relay.bounces.simulator import DEFAULT_DOMAIN, Outcome, is_simulator_address, simulate
from relay.upstream.classify import FailureCode


@pytest.mark.parametrize(("recipient", "outcome", "kind", "code", "suppress"), [
    ("delivered@simulator.invalid", Outcome.DELIVERED, None, None, False),
    ("bounce@simulator.invalid", Outcome.BOUNCE, Kind.BOUNCED, FailureCode.NO_SUCH_USER, True),
    ("ooto@simulator.invalid", Outcome.OOTO, Kind.AUTO_REPLIED, FailureCode.AUTO_REPLY, False),
    ("complaint@simulator.invalid", Outcome.COMPLAINT, Kind.COMPLAINED, None, True),
    ("suppressed@simulator.invalid", Outcome.SUPPRESSED, None, None, False),
])
def test_each_mailbox(recipient: str, outcome: Outcome, kind: Kind | None, code: FailureCode | None,
                      suppress: bool) -> None:
    result = simulate(recipient)
    assert result is not None
    assert result.outcome is outcome
    if kind is None:
        assert result.finding is None and not suppress
    else:
        assert result.finding is not None
        assert (result.finding.kind, result.finding.failure_code, result.finding.recipient) == (
            kind, code, recipient)
        assert suppresses(result.finding) is suppress  # the rule the recorded finding goes through


def test_case_brackets_and_labels() -> None:
    result = simulate("<Bounce+signup-test@SIMULATOR.invalid>")
    assert result is not None and result.outcome is Outcome.BOUNCE
    assert result.finding is not None and result.finding.recipient == "Bounce+signup-test@SIMULATOR.invalid"
    labelled = simulate("ooto+week2@simulator.invalid")
    assert labelled is not None and labelled.outcome is Outcome.OOTO


def test_unknown_mailbox_bounces_as_no_such_user() -> None:
    result = simulate("nobody@simulator.invalid")
    assert result is not None and result.outcome is Outcome.BOUNCE
    assert result.finding is not None and result.finding.failure_code is FailureCode.NO_SUCH_USER
    assert result.finding.status == "5.1.1"


@pytest.mark.parametrize("recipient", [
    "bounce@example.com", "bounce@sub.simulator.invalid", "bounce@simulator.invalid.example.com",
    "simulator.invalid", "", "bounce@",
])
def test_other_domains_are_not_simulated(recipient: str) -> None:
    assert simulate(recipient) is None
    assert not is_simulator_address(recipient)


def test_domain_is_configurable() -> None:
    assert DEFAULT_DOMAIN == "simulator.invalid"
    assert simulate("bounce@simulator.invalid", "sim.test") is None
    result = simulate("complaint@Sim.Test", "sim.test.")
    assert result is not None and result.outcome is Outcome.COMPLAINT
    assert is_simulator_address("a@sim.test", "sim.test")

"""The sender rules as pure functions: verdicts in; trusted, forwarded as external or refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from worker.contracts.events import ParticipantRole
from worker.domain.abuse import OverLimit
from worker.domain.replies import (
    DNS_TEMPORARY,
    MARKETING_REFUSED,
    NOT_AUTHENTICATED,
    RATE_LIMITED,
)
from worker.domain.screening import Accepted, Claim, claimed_sender, rate_refused, screen
from worker.domain.sender_auth import (
    AsExternal,
    Authentication,
    DkimVerdict,
    DmarcPolicy,
    DmarcVerdict,
    Refused,
    Result,
    SpfVerdict,
    Trusted,
    judge_sender,
)

CUSTOMER, STORE, EXTERNAL = (
    ParticipantRole.CUSTOMER,
    ParticipantRole.STORE,
    ParticipantRole.EXTERNAL,
)


def auth(
    *,
    spf: Result = Result.NONE,
    spf_aligned: bool = True,
    dkim: tuple[tuple[Result, bool], ...] = (),
    dmarc: Result = Result.NONE,
    policy: DmarcPolicy | None = None,
) -> Authentication:
    return Authentication(
        from_domain="shop.example.com",
        org_domain="example.com",
        spf=SpfVerdict(spf, "mailfrom", "bounces.example.com", spf_aligned),
        dkim=tuple(
            DkimVerdict(result, "example.com" if aligned else "esp.example.net", "s1", aligned)
            for result, aligned in dkim
        ),
        dmarc=DmarcVerdict(dmarc, policy),
    )


PASSING = auth(
    spf=Result.PASS, dkim=((Result.PASS, True),), dmarc=Result.PASS, policy=DmarcPolicy.REJECT
)
FORGED = auth(spf=Result.FAIL, dmarc=Result.FAIL, policy=DmarcPolicy.NONE)


def test_authentication_off_trusts_the_headers_as_before() -> None:
    assert judge_sender(None, recipient_role=EXTERNAL, claimed_role=CUSTOMER) == Trusted()


@pytest.mark.parametrize("recipient", [CUSTOMER, STORE, EXTERNAL])
def test_a_dmarc_pass_makes_a_participant_trusted_wherever_it_writes(
    recipient: ParticipantRole,
) -> None:
    assert judge_sender(PASSING, recipient_role=recipient, claimed_role=CUSTOMER) == Trusted()


def test_without_a_dmarc_record_an_aligned_spf_or_dkim_pass_authenticates() -> None:
    aligned_spf = auth(spf=Result.PASS)
    aligned_dkim = auth(spf=Result.FAIL, dkim=((Result.FAIL, True), (Result.PASS, True)))
    assert aligned_spf.authenticated() and aligned_dkim.authenticated()
    for verdicts in (aligned_spf, aligned_dkim):
        assert judge_sender(verdicts, recipient_role=EXTERNAL, claimed_role=CUSTOMER) == Trusted()


def test_without_a_dmarc_record_an_unaligned_pass_does_not_authenticate() -> None:
    unaligned = auth(spf=Result.PASS, spf_aligned=False, dkim=((Result.PASS, False),))
    assert not unaligned.authenticated()
    refused = judge_sender(unaligned, recipient_role=EXTERNAL, claimed_role=CUSTOMER)
    assert isinstance(refused, Refused) and refused.reply == NOT_AUTHENTICATED
    assert refused.reason.startswith("sender-not-authenticated; spf=pass")


def test_a_failing_dmarc_is_not_rescued_by_an_aligned_spf_pass_elsewhere() -> None:
    # DMARC's own verdict rules once a record exists (strict alignment may have failed it).
    strict_fail = auth(spf=Result.PASS, dmarc=Result.FAIL, policy=DmarcPolicy.NONE)
    assert not strict_fail.authenticated()


def test_a_forged_customer_writing_to_a_reverse_alias_is_refused_as_not_verified() -> None:
    refused = judge_sender(FORGED, recipient_role=EXTERNAL, claimed_role=CUSTOMER)
    assert refused == Refused(NOT_AUTHENTICATED, f"sender-not-authenticated; {FORGED.summary()}")
    assert refused.code == 550 and "5.7.1" in refused.reply


def test_a_forged_store_under_a_lax_policy_is_forwarded_as_an_external_sender() -> None:
    for policy in (DmarcPolicy.NONE, None):
        verdicts = replace(
            FORGED, dmarc=DmarcVerdict(Result.FAIL if policy else Result.NONE, policy)
        )
        treatment = judge_sender(verdicts, recipient_role=CUSTOMER, claimed_role=STORE)
        assert isinstance(treatment, AsExternal)
        assert treatment.reason.startswith("sender-not-authenticated; ")


def test_a_forged_participant_under_quarantine_or_reject_is_refused() -> None:
    quarantine = replace(FORGED, dmarc=DmarcVerdict(Result.FAIL, DmarcPolicy.QUARANTINE))
    treatment = judge_sender(quarantine, recipient_role=CUSTOMER, claimed_role=STORE)
    assert isinstance(treatment, Refused) and treatment.reply == NOT_AUTHENTICATED
    assert treatment.reason.startswith("dmarc-policy-quarantine; ")
    reject = replace(FORGED, dmarc=DmarcVerdict(Result.FAIL, DmarcPolicy.REJECT))
    treatment = judge_sender(reject, recipient_role=STORE, claimed_role=CUSTOMER)
    assert isinstance(treatment, Refused) and treatment.reply == NOT_AUTHENTICATED


def test_any_sender_failing_a_reject_policy_is_refused_even_a_stranger() -> None:
    reject = replace(FORGED, dmarc=DmarcVerdict(Result.FAIL, DmarcPolicy.REJECT))
    treatment = judge_sender(reject, recipient_role=CUSTOMER, claimed_role=None)
    assert isinstance(treatment, Refused) and treatment.reply == NOT_AUTHENTICATED
    assert treatment.reason.startswith("dmarc-policy-reject; ")


def test_strangers_are_external_senders_verified_only_when_authenticated() -> None:
    for verdicts in (FORGED, auth(spf=Result.SOFTFAIL), auth()):
        treatment = judge_sender(verdicts, recipient_role=CUSTOMER, claimed_role=None)
        assert isinstance(treatment, AsExternal)
    carrier = judge_sender(PASSING, recipient_role=CUSTOMER, claimed_role=EXTERNAL)
    assert carrier == Trusted()


@pytest.mark.parametrize(
    "dmarc",
    [
        DmarcVerdict(Result.FAIL, DmarcPolicy.REJECT),
        DmarcVerdict(Result.FAIL, DmarcPolicy.QUARANTINE),
        DmarcVerdict(Result.FAIL, DmarcPolicy.NONE),
        DmarcVerdict(Result.NONE, None),
    ],
    ids=["reject", "quarantine", "none", "absent"],
)
@pytest.mark.parametrize("recipient", [CUSTOMER, STORE, EXTERNAL])
def test_no_oracle_a_right_and_a_wrong_guess_are_treated_alike(
    dmarc: DmarcVerdict, recipient: ParticipantRole
) -> None:
    """An unauthenticated sender claiming the participant's real address (the right guess) gets
    exactly what a sender claiming any other address (a wrong guess) gets."""
    verdicts = replace(FORGED, dmarc=dmarc)
    for claimed in (CUSTOMER, STORE):
        right = judge_sender(verdicts, recipient_role=recipient, claimed_role=claimed)
        wrong = judge_sender(verdicts, recipient_role=recipient, claimed_role=None)
        assert right == wrong
        envelope_only = judge_sender(
            verdicts, recipient_role=recipient, claimed_role=claimed, claimed_in_from=False
        )
        assert envelope_only == wrong


def test_a_failed_lookup_is_the_same_451_whatever_the_claim() -> None:
    spf_down = auth(spf=Result.TEMPERROR)
    for claimed in (CUSTOMER, None):
        treatment = judge_sender(spf_down, recipient_role=CUSTOMER, claimed_role=claimed)
        assert isinstance(treatment, Refused) and treatment.reply == DNS_TEMPORARY


def test_a_failed_lookup_that_decides_the_outcome_is_a_451_never_a_guess() -> None:
    dmarc_down = auth(spf=Result.PASS, dmarc=Result.TEMPERROR)
    spf_down = auth(spf=Result.TEMPERROR)
    dkim_down = auth(spf=Result.FAIL, dkim=((Result.TEMPERROR, True),))
    for verdicts in (spf_down, dkim_down):
        assert verdicts.undecided()
        treatment = judge_sender(verdicts, recipient_role=CUSTOMER, claimed_role=STORE)
        assert isinstance(treatment, Refused) and treatment.reply == DNS_TEMPORARY
    # The DMARC record itself unknown: even a stranger's message cannot be judged.
    treatment = judge_sender(dmarc_down, recipient_role=CUSTOMER, claimed_role=None)
    assert isinstance(treatment, Refused) and treatment.reply == DNS_TEMPORARY
    assert treatment.code == 451 and "4.4.3" in treatment.reply


def test_a_failed_lookup_that_cannot_change_the_outcome_does_not_delay_mail() -> None:
    # DKIM passed aligned, so the SPF lookup that timed out does not matter.
    verdicts = auth(spf=Result.TEMPERROR, dkim=((Result.PASS, True),))
    assert not verdicts.undecided()
    assert judge_sender(verdicts, recipient_role=EXTERNAL, claimed_role=CUSTOMER) == Trusted()
    # An unaligned identifier could never have authenticated From.
    unaligned = auth(spf=Result.TEMPERROR, spf_aligned=False)
    assert not unaligned.undecided()


def test_no_from_domain_never_authenticates() -> None:
    assert not replace(PASSING, from_domain=None).authenticated()


def test_the_summary_names_domains_and_results_never_an_address() -> None:
    text = PASSING.summary()
    assert text == (
        "spf=pass(mailfrom=bounces.example.com) dkim=pass(d=example.com)"
        " dmarc=pass(p=reject)(from=shop.example.com)"
    )
    assert "@" not in text and "@" not in FORGED.summary()


def test_screening_refuses_marketing_from_external_senders_only() -> None:
    markers = ("List-Unsubscribe",)
    stranger = screen(
        FORGED, recipient_role=CUSTOMER, claim=Claim(None, in_from=False), marketing_markers=markers
    )
    assert isinstance(stranger, Refused) and stranger.reply == MARKETING_REFUSED
    assert stranger.reason.startswith("marketing-refused (List-Unsubscribe); spf=fail")
    store = screen(
        PASSING,
        recipient_role=CUSTOMER,
        claim=Claim(STORE, in_from=True),
        marketing_markers=markers,
    )
    assert store == Accepted(sender_verified=True, external=False, verdicts=PASSING.summary())
    # A forged store is an external sender: its newsletter is refused like anyone's.
    forged = screen(
        FORGED, recipient_role=CUSTOMER, claim=Claim(STORE, in_from=True), marketing_markers=markers
    )
    assert isinstance(forged, Refused) and forged.reply == MARKETING_REFUSED


def test_screening_marks_who_the_rate_limits_count() -> None:
    carrier = screen(
        PASSING, recipient_role=CUSTOMER, claim=Claim(EXTERNAL, in_from=True), marketing_markers=()
    )
    forged = screen(
        FORGED, recipient_role=CUSTOMER, claim=Claim(STORE, in_from=True), marketing_markers=()
    )
    off = screen(
        None, recipient_role=CUSTOMER, claim=Claim(None, in_from=False), marketing_markers=()
    )
    assert carrier == Accepted(sender_verified=True, external=True, verdicts=PASSING.summary())
    assert isinstance(carrier, Accepted)
    assert isinstance(forged, Accepted) and (forged.sender_verified, forged.external) == (
        False,
        True,
    )
    assert forged.verdicts.startswith("sender-not-authenticated; ")
    assert off == Accepted(
        sender_verified=True, external=True, verdicts="sender-authentication-off"
    )
    over = OverLimit("ip", "192.0.2.1", record=True, window_started=0.0)
    refused = rate_refused(over, carrier.verdicts)
    assert refused.reply == RATE_LIMITED and refused.code == 451 and "4.7.1" in refused.reply
    assert "192.0.2.1" not in refused.reason and refused.reason.startswith("rate-limited (per ip)")


def test_a_claim_made_by_the_envelope_alone_is_never_verified() -> None:
    # A stranger with a DMARC pass of its own, and the customer's address as MAIL FROM.
    treatment = judge_sender(
        PASSING, recipient_role=EXTERNAL, claimed_role=CUSTOMER, claimed_in_from=False
    )
    assert isinstance(treatment, Refused) and treatment.reply == NOT_AUTHENTICATED
    lax = replace(PASSING, dmarc=DmarcVerdict(Result.PASS, DmarcPolicy.NONE))
    as_store = judge_sender(lax, recipient_role=CUSTOMER, claimed_role=STORE, claimed_in_from=False)
    # Trusted as what its From says, a stranger: `decide_route` never reads the envelope
    # beside a From address, so it goes out under the stranger's own reverse alias.
    assert as_store == Trusted()


def test_the_claim_is_read_from_from_first_then_from_the_envelope() -> None:
    from tests.unit.test_relaying import CARRIER as CARRIER_VIEW
    from tests.unit.test_relaying import CUSTOMER as CUSTOMER_VIEW
    from tests.unit.test_relaying import PARTIES
    from tests.unit.test_relaying import STORE as STORE_VIEW

    customer, store = CUSTOMER_VIEW.real_address, STORE_VIEW.real_address
    assert claimed_sender(PARTIES, f"Maria <{customer.upper()}>", store) == Claim(CUSTOMER, True)
    # A From with an address decides alone: the envelope never makes a claim beside it.
    assert claimed_sender(PARTIES, "x@elsewhere.test", f"<{store}>") == Claim(None, True)
    # An alias is never a claim: our own addresses coming back are a loop.
    assert claimed_sender(PARTIES, CUSTOMER_VIEW.address, "") == Claim(None, True)
    assert claimed_sender(PARTIES, None, customer) == Claim(CUSTOMER, False)
    assert claimed_sender(PARTIES, CARRIER_VIEW.real_address, "") == Claim(EXTERNAL, True)
    assert claimed_sender(PARTIES, "x@elsewhere.test", "y@elsewhere.test") == Claim(None, True)

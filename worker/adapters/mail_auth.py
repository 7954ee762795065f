"""SPF, DKIM and DMARC of one incoming message, over asynchronous DNS, as plain verdict values.

The libraries, and why:
- SPF: pyspf, the reference implementation of RFC 7208 (its maintainer co-wrote the RFC; it is
  what authheaders, spf-engine and dkimpy-milter use). checkdmarc checks a domain's published
  records but does not evaluate a message's client IP against them.
- DKIM: dkimpy, from the same maintainers, for parsing and canonicalisation; the RSA check is
  OpenSSL's through `cryptography` (`dkim_bounds`), after the RFC 8301 bounds: keys of 1024 to
  4096 bits with exponent 3 or 65537, rsa-sha256 or ed25519-sha256, the first three signatures.
- DMARC: `dmarc` (pydmarc) for the record's grammar and the policy evaluation (alignment modes,
  `sp=`, `t=` testing mode), with the organisational domain from `publicsuffixlist`, which ships
  the Public Suffix List inside the package (no download at run time).

Only DNS is asynchronous here, and that is what keeps the loop free: pyspf and dkimpy do their
lookups synchronously, so they are handed a resolver function that reads answers already fetched
with the asynchronous `DnsClient`. DKIM's and DMARC's names are known up front (`s._domainkey.d`,
`_dmarc.<From domain>`), so they are fetched first. SPF's are discovered while a record is
evaluated (include:, redirect=, a, mx), so the evaluation runs, stops at the first answer it
lacks, the missing answers are fetched, and it runs again: a record needs at most ten lookups
(RFC 7208 4.6.4), and evaluating one is microseconds of CPU. The CPU that matters, hashing the
body for DKIM, runs in a thread for a large message, like the relay's other parsing.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any, Final

import dkim
import dmarc
import spf
from publicsuffixlist import PublicSuffixList

from worker.adapters.dkim_bounds import (
    MAX_SIGNATURE_CHARS,
    KeyRefused,
    check_signature,
    openssl_rsa_verify,
    usable_key,
)
from worker.adapters.dns import DnsClient, DnsUnavailable, RecordType
from worker.core.offload import off_loop_over
from worker.domain.headers import ParsedMessage
from worker.domain.sender_auth import (
    Authentication,
    DkimVerdict,
    DmarcPolicy,
    DmarcVerdict,
    Result,
    SpfVerdict,
)

# Each signature costs a key lookup and a body hash: a message cannot make us do unbounded work.
MAX_DKIM_SIGNATURES: Final = 3
DKIM_INLINE_MAX_BYTES: Final = 64 * 1024
# Rounds of "evaluate, fetch what was missing": the lookup limits of RFC 7208 bound them well below.
_MAX_SPF_ROUNDS: Final = 50
_SPF_RESULTS: Final = {r.value: r for r in Result}
_QUIET = logging.getLogger("worker.adapters.mail_auth.libraries")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False  # dkimpy logs header contents at debug level: never into our logs


class _Unfetched(spf.TempError):  # type: ignore[misc]
    """Stops a pyspf evaluation at an answer not fetched yet; a TempError, so pyspf unwinds."""


@dataclass
class _SpfAnswers:
    """The answers one SPF evaluation may read, and the questions it asked without one."""

    answers: dict[tuple[str, str], list[tuple[tuple[str, str], Any]] | DnsUnavailable] = field(
        default_factory=dict
    )
    missing: set[tuple[str, RecordType]] = field(default_factory=set)


_current_answers: contextvars.ContextVar[_SpfAnswers] = contextvars.ContextVar("spf_answers")


def _prefetched_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> Any:
    """pyspf's DNSLookup, answered from `_current_answers` (never from the network)."""
    key = (name.lower().rstrip("."), qtype)
    if qtype not in ("A", "AAAA", "MX", "PTR", "TXT"):
        return []  # type 99 (SPF) records are obsolete (RFC 7208 3.1)
    answers = _current_answers.get()
    found = answers.answers.get(key)
    if found is None:
        answers.missing.add((key[0], qtype))  # type: ignore[arg-type]
        raise _Unfetched(f"DNS {qtype} {key[0]} not fetched yet")
    if isinstance(found, DnsUnavailable):
        raise spf.TempError(f"DNS {found}")
    return found


# dkimpy computes RSA in pure Python; OpenSSL (through `cryptography`) does the same check in
# a fraction of the time, and `usable_key` has bounded the key before it gets here.
dkim.RSASSA_PKCS1_v1_5_verify = openssl_rsa_verify

# pyspf picks its DNS function at import time (dnspython or pydns) and calls the module's
# DNSLookup; replacing it is how a resolver is supplied. It reads a context variable, so
# concurrent evaluations (and evaluations in threads) each see only their own answers.
spf.DNSLookup = _prefetched_lookup


class _OrganisationalDomains:
    """The Public Suffix List in the shape pydmarc's alignment check asks for."""

    def __init__(self) -> None:
        self._psl = PublicSuffixList()

    def of(self, domain: str | None) -> str | None:
        if not domain:
            return None
        found = self._psl.privatesuffix(domain.lower().rstrip("."))
        return str(found) if found else None

    def get_public_suffix(self, domain: str) -> str:  # pydmarc's name for it
        return self.of(domain) or domain


class SenderAuthenticator:
    """Evaluates SPF, DKIM and DMARC for a message; never raises for a sender's bad records."""

    def __init__(self, dns_client: DnsClient) -> None:
        self._dns = dns_client
        self._domains = _OrganisationalDomains()
        self._dmarc = dmarc.DMARC(publicsuffix=self._domains)

    async def authenticate(
        self, message: ParsedMessage | bytes, *, client_ip: str, mail_from: str, helo: str
    ) -> Authentication:
        message = ParsedMessage.of(message)
        from_domain = _from_domain(message)
        org = self._domains.of(from_domain)
        # The three lookups are independent: one round trip rather than three.
        spf_verdict, dkim_verdicts, record = await asyncio.gather(
            self.spf(client_ip=client_ip, mail_from=mail_from, helo=helo, org_domain=org),
            self.dkim(message, org_domain=org),
            self._dmarc_record(from_domain, org),
        )
        dmarc_verdict = self._dmarc_verdict(record, spf_verdict, dkim_verdicts)
        return Authentication(from_domain, org, spf_verdict, dkim_verdicts, dmarc_verdict)

    async def spf(
        self, *, client_ip: str, mail_from: str, helo: str, org_domain: str | None
    ) -> SpfVerdict:
        mail_from = mail_from.strip().strip("<>")
        identity = "mailfrom" if mail_from else "helo"
        domain = _ascii_domain(mail_from.rpartition("@")[2] if mail_from else helo)
        aligned = self._aligned(domain, org_domain)
        answers = _SpfAnswers()
        for _ in range(_MAX_SPF_ROUNDS):
            query = spf.query(i=client_ip, s=mail_from, h=helo, querytime=0)
            token = _current_answers.set(answers)
            try:
                result, _, _ = query.check()
            finally:
                _current_answers.reset(token)
            if not answers.missing:
                verdict = _SPF_RESULTS.get(result, Result.PERMERROR)
                return SpfVerdict(verdict, identity, domain, aligned)  # type: ignore[arg-type]
            await self._fetch_for_spf(answers)
        return SpfVerdict(Result.PERMERROR, identity, domain, aligned)  # type: ignore[arg-type]

    def _aligned(self, domain: str, org_domain: str | None) -> bool:
        """Relaxed alignment: `domain` is in the organisational domain of `From`."""
        return org_domain is not None and self._domains.of(domain) == org_domain

    async def _fetch_for_spf(self, answers: _SpfAnswers) -> None:
        wanted = list(answers.missing)
        answers.missing.clear()
        found = await asyncio.gather(
            *(self._dns.lookup(name, rdtype) for name, rdtype in wanted), return_exceptions=True
        )
        for (name, rdtype), records in zip(wanted, found, strict=True):
            if isinstance(records, DnsUnavailable):
                answers.answers[(name, rdtype)] = records
            elif isinstance(records, BaseException):
                raise records
            else:
                answers.answers[(name, rdtype)] = [((name, rdtype), r) for r in records]

    async def dkim(
        self, message: ParsedMessage | bytes, *, org_domain: str | None
    ) -> tuple[DkimVerdict, ...]:
        """A verdict for each of the first MAX_DKIM_SIGNATURES signatures, top first."""
        message = ParsedMessage.of(message)
        signatures = _signature_tags(message)[:MAX_DKIM_SIGNATURES]
        if not signatures:
            return ()
        names = {f"{s}._domainkey.{d}" for d, s in signatures if d and s}
        fetched = await asyncio.gather(
            *(self._dns.txt(name) for name in names), return_exceptions=True
        )
        keys: dict[str, bytes | DnsUnavailable | None] = {}
        for name, records in zip(names, fetched, strict=True):
            if isinstance(records, DnsUnavailable):
                keys[name] = records
            elif isinstance(records, BaseException):
                raise records
            else:
                keys[name] = records[0] if records else None
        # The verification's cost is bounded by RFC 8301's limits (at most MAX_DKIM_SIGNATURES
        # keys of at most 4096 bits, checked by OpenSSL) and is otherwise linear in the message:
        # up to DKIM_INLINE_MAX_BYTES it is under about 2 ms on this project's 2-core bench
        # machine (1 ms for one 2048-bit signature over 64 KB, 0.3 ms over 4 KB), less than the
        # thread hop's cost to every session; a larger message is verified in a thread.
        results = await off_loop_over(
            DKIM_INLINE_MAX_BYTES, len(message.raw), _verify_all, message.raw, signatures, keys
        )
        return tuple(
            DkimVerdict(result, d, s, aligned=self._aligned(d, org_domain))
            for (d, s), result in zip(signatures, results, strict=True)
        )

    def _dmarc_verdict(
        self,
        found: tuple[Any, bool] | DnsUnavailable,
        spf_verdict: SpfVerdict,
        dkim_verdicts: tuple[DkimVerdict, ...],
    ) -> DmarcVerdict:
        if isinstance(found, DnsUnavailable):
            return DmarcVerdict(Result.TEMPERROR, None)
        record, at_org = found
        if record is None:
            return DmarcVerdict(Result.NONE, None)
        spf_identity = (
            dmarc.SPF(spf_verdict.domain, dmarc.SPFResult(spf_verdict.result.value))
            if spf_verdict.domain
            else None
        )
        dkim_identities = [
            dmarc.DKIM(d.domain, dmarc.DKIMResult(d.result.value), d.selector)
            for d in dkim_verdicts
            if d.domain
        ]
        evaluated = self._dmarc.get_result(
            record,
            auth_results=dmarc.AuthResults(spf=spf_identity, dkim=dkim_identities or None),
        )
        policy = _applied_policy(record, at_org)
        if evaluated.result is dmarc.DMARCResult.PASS:
            return DmarcVerdict(Result.PASS, policy)
        # A lookup that failed for an aligned identifier might have passed: not a verdict.
        lookups_failed = (spf_verdict.aligned and spf_verdict.result is Result.TEMPERROR) or any(
            d.aligned and d.result is Result.TEMPERROR for d in dkim_verdicts
        )
        return DmarcVerdict(Result.TEMPERROR if lookups_failed else Result.FAIL, policy)

    async def _dmarc_record(
        self, domain: str | None, org: str | None
    ) -> tuple[Any, bool] | DnsUnavailable:
        """RFC 7489 6.6.3: the From domain's record, else its organisational domain's."""
        try:
            return await self._find_dmarc_record(domain, org)
        except DnsUnavailable as exc:
            return exc

    async def _find_dmarc_record(self, domain: str | None, org: str | None) -> tuple[Any, bool]:
        if domain is None:
            return None, False
        for candidate, at_org in ((domain, False), (org, True)):
            if candidate is None or (at_org and candidate == domain):
                continue
            records = await self._dns.txt(f"_dmarc.{candidate}")
            texts = [r.decode("utf-8", "replace") for r in records]
            found = [t for t in texts if t.lower().startswith("v=dmarc1")]
            if len(found) > 1:
                return None, at_org  # several records: DMARC does not apply (6.6.3, step 2)
            if found:
                try:
                    parsed = self._dmarc.parse_record(
                        found[0],
                        domain=domain,
                        org_domain=candidate if at_org else None,
                        strict=False,
                    )
                except dmarc.RecordSyntaxError:
                    continue  # an invalid record is no record
                return parsed, at_org
        return None, False


def _applied_policy(record: Any, at_org: bool) -> DmarcPolicy:
    """p=, or sp= for a subdomain of the record's domain; `t=y` lowers it one step."""
    chosen = record.p
    if at_org and record.sp is not dmarc.DMARCDisposition.UNSPECIFIED:
        chosen = record.sp
    policy = DmarcPolicy(chosen.value)
    if record.t is dmarc.DMARCTesting.Y:
        policy = {DmarcPolicy.REJECT: DmarcPolicy.QUARANTINE}.get(policy, DmarcPolicy.NONE)
    return policy


def _from_domain(message: ParsedMessage) -> str | None:
    """The single `From` address's domain; None without one, or with several (RFC 7489 6.6.1)."""
    header = message.header("From")
    if not header:
        return None
    addresses = [a for _, a in getaddresses([header]) if "@" in a]
    if len(addresses) != 1:
        return None
    domain = addresses[0].rpartition("@")[2].strip().lower().rstrip(".")
    return domain if "." in domain and domain.isascii() else None


def _ascii_domain(name: str) -> str:
    """A domain as DNS and headers carry it (IDNA); empty when it cannot be one."""
    name = name.strip().lower().rstrip(".")
    try:
        return name if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def _signature_tags(message: ParsedMessage) -> list[tuple[str, str]]:
    """(d=, s=) of each DKIM-Signature, top first; empty strings where a tag is unreadable."""
    tags = []
    for value in message.headers("DKIM-Signature"):
        try:
            parsed = dkim.util.parse_tag_value(value[:MAX_SIGNATURE_CHARS].encode("ascii"))
            d = parsed.get(b"d", b"").decode("ascii").strip().lower().rstrip(".")
            s = parsed.get(b"s", b"").decode("ascii").strip().lower()
        except (dkim.util.InvalidTagValueList, UnicodeError):
            d = s = ""
        tags.append((d, s))
    return tags


def _verify_all(
    message: bytes,
    signatures: list[tuple[str, str]],
    keys: dict[str, bytes | DnsUnavailable | None],
) -> list[Result]:
    """dkimpy over every signature, its key lookups answered from `keys`."""
    verifier = dkim.DKIM(message, logger=_QUIET)
    return [
        _verify_one(verifier, index, keys.get(f"{s}._domainkey.{d}") if d and s else None)
        for index, (d, s) in enumerate(signatures)
    ]


def _verify_one(  # noqa: PLR0911 - one verdict per way a signature can fail
    verifier: Any, index: int, key: bytes | DnsUnavailable | None
) -> Result:
    if isinstance(key, DnsUnavailable):
        return Result.TEMPERROR
    if key is None:
        return Result.PERMERROR  # no key published, or no d=/s= to find it by
    try:
        # RFC 8301 before any work: rsa-sha1, keys outside 1024-4096 bits, odd exponents.
        check_signature(verifier.headers, index)
        usable_key(key)
    except KeyRefused:
        return Result.PERMERROR
    try:
        if not verifier.verify_headerprep(index):  # the signature's own tags, checked
            return Result.PERMERROR
    except dkim.DKIMException:
        return Result.PERMERROR
    try:
        verified = verifier.verify(idx=index, dnsfunc=lambda _name, timeout=0: key)
    except dkim.DKIMException:
        return Result.FAIL  # a well-formed signature that does not match (the body hash, say)
    return Result.PASS if verified else Result.FAIL

"""Tokens from the host platform without a server: the configuration, the claim mapping, the
verifier's refusals and the JWKS refresher (docs/external-auth.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from webinar_chat.auth.external import (
    ExternalConfig,
    ExternalVerifier,
    JwksRefresher,
    UnknownKey,
    parse_jwks,
)
from webinar_chat.auth.tokens import TokenError, TokenService
from webinar_chat.server.identities import claim, frame_token, map_claims, scope_token
from webinar_chat.settings import Settings

from .external_tokens import (
    AUDIENCE,
    ISSUER,
    SECRET,
    claims,
    ec_key,
    hs256,
    hs256_with_public_key,
    jwks,
    rsa_key,
    signed,
    unsigned,
)
from .helpers import eventually


def config(**overrides: Any) -> ExternalConfig:
    values: dict[str, Any] = {"external_jwt_issuer": ISSUER, "external_jwt_audience": AUDIENCE}
    values.update(overrides)
    found = ExternalConfig.from_settings(Settings(**values))
    assert found is not None
    return found


# --- configuration -------------------------------------------------------------------------------

def test_off_by_default() -> None:
    assert ExternalConfig.from_settings(Settings()) is None


def test_default_algorithms_follow_the_keys() -> None:
    assert config(external_jwt_secret=SECRET).algorithms == ("HS256",)
    assert config(external_jwt_jwks_file="/x.json").algorithms == ("RS256", "ES256")
    both = config(external_jwt_secret=SECRET, external_jwt_jwks_url="https://x/jwks")
    assert both.algorithms == ("HS256", "RS256", "ES256")


@pytest.mark.parametrize("overrides, problem", [
    ({"external_jwt_secret": SECRET, "external_jwt_algorithms": "RS256"}, "needs a JWKS"),
    ({"external_jwt_jwks_file": "/x", "external_jwt_algorithms": "HS256"}, "EXTERNAL_JWT_SECRET"),
    ({"external_jwt_secret": SECRET, "external_jwt_algorithms": "none"}, "not supported"),
    ({"external_jwt_jwks_file": "/x", "external_jwt_jwks_url": "https://x"}, "not both"),
    ({"external_jwt_jwks_url": "file:///etc/jwks"}, "http(s)"),
    ({"external_jwt_secret": "short"}, "too short"),
])
def test_configurations_that_cannot_work_fail_at_start(overrides: dict[str, Any],
                                                       problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        ExternalConfig.from_settings(Settings(**overrides))


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTERNAL_JWT_SECRET", SECRET)
    monkeypatch.setenv("EXTERNAL_JWT_NAME_CLAIM", "user_metadata.full_name,name")
    monkeypatch.setenv("EXTERNAL_JWT_WEBINARS_CLAIM", "app_metadata.webinars")
    monkeypatch.setenv("EXTERNAL_JWT_JWKS_REFRESH_S", "60")
    found = ExternalConfig.from_settings(Settings.from_env())
    assert found is not None
    assert found.name_claims == ("user_metadata.full_name", "name")
    assert found.webinars_claim == "app_metadata.webinars" and found.refresh_s == 60


# --- claim mapping (pure) ------------------------------------------------------------------------

def test_claim_paths() -> None:
    payload = {"app_metadata": {"role": "host"}, "https://example.com/roles": ["a"], "x": 1}
    assert claim(payload, "app_metadata.role") == "host"
    assert claim(payload, "https://example.com/roles") == ["a"]
    assert claim(payload, "app_metadata.missing") is None
    assert claim(payload, "x.y") is None and claim(payload, "") is None


def test_display_name_from_claim_then_email_then_subject() -> None:
    cfg = config(external_jwt_secret=SECRET,
                 external_jwt_name_claim="user_metadata.full_name,name")
    nested = map_claims(claims("s-1", user_metadata={"full_name": "  Ada Lovelace "}), cfg)
    assert nested.display_name == "Ada Lovelace"
    assert map_claims(claims("s-1", name="Grace"), cfg).display_name == "Grace"
    by_email = map_claims(claims("s-1", email="Carol.Smith@Example.test"), cfg)
    assert by_email.display_name == "Carol.Smith" and by_email.email == "carol.smith@example.test"
    bare = map_claims(claims("0123456789abcdef"), cfg)
    assert bare.display_name == "User 01234567" and bare.email is None
    # A name that cannot be one (control characters, invisible only) falls through.
    assert map_claims(claims("abc", name="\u200b\u200b", email="z@x.test"),
                      cfg).display_name == "z"
    assert map_claims(claims("abc", name="A" * 200), cfg).display_name == "A" * 80


def test_subject_issuer_and_expiry() -> None:
    cfg = config(external_jwt_secret=SECRET, external_jwt_subject_claim="uid")
    identity = map_claims(claims(uid=42, exp=2_000_000_000), cfg, key_id="k")
    assert (identity.subject, identity.issuer, identity.expires_at, identity.key_id) == (
        "42", ISSUER, 2_000_000_000.0, "k")
    for bad in (None, "", "  ", True, ["x"], "x" * 256):
        with pytest.raises(TokenError) as info:
            map_claims({"uid": bad, "exp": 1}, cfg)
        assert info.value.code == "invalid_token"
    unconfigured = config(external_jwt_secret=SECRET, external_jwt_issuer="")
    assert map_claims(claims("s"), unconfigured).issuer == ISSUER  # the token's own `iss`
    assert map_claims({"sub": "s", "exp": 1}, unconfigured).issuer == ""


def test_registrations_from_claims() -> None:
    cfg = config(external_jwt_secret=SECRET, external_jwt_webinars_claim="app_metadata.webinars",
                 external_jwt_role_claim="app_metadata.role")
    listed = map_claims(claims(app_metadata={"webinars": [3, "4", 3, True, -1, "x"],
                                             "role": "moderator"}), cfg)
    assert listed.registrations == ((3, "moderator"), (4, "moderator"))
    mapping = map_claims(claims(app_metadata={"webinars": {"5": "host", "6": "king"}}), cfg)
    assert mapping.registrations == ((5, "host"), (6, "attendee"))
    text = map_claims(claims(app_metadata={"webinars": "7, 8", "role": "authenticated"}), cfg)
    assert text.registrations == ((7, "attendee"), (8, "attendee"))
    assert map_claims(claims(), cfg).registrations == ()  # configured, claim absent: none
    assert map_claims(claims(), config(external_jwt_secret=SECRET)).registrations is None


# --- the verifier --------------------------------------------------------------------------------

def verifier(**overrides: Any) -> ExternalVerifier:
    found = ExternalVerifier(config(**overrides))
    if found.config.uses_jwks:
        found.set_keys(parse_jwks(jwks((rsa_key("a"), "rsa-a"), (ec_key("a"), "ec-a"))))
    return found


def code_of(v: ExternalVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        v.verify(token)
    return info.value.code


def test_verifies_hs256_rs256_es256() -> None:
    mixed = verifier(external_jwt_secret=SECRET, external_jwt_jwks_file="/unused")
    assert mixed.verify(hs256(claims("h"))).payload["sub"] == "h"
    assert mixed.verify(signed(claims("r"), rsa_key("a"), "rsa-a")).key_id == "rsa-a"
    assert mixed.verify(signed(claims("e"), ec_key("a"), "ec-a")).key_id == "ec-a"


def test_refusals() -> None:
    mixed = verifier(external_jwt_secret=SECRET, external_jwt_jwks_file="/unused")
    jwks_only = verifier(external_jwt_jwks_file="/unused")
    expired = claims(exp=int(time.time()) - 5)
    assert code_of(mixed, hs256(expired)) == "token_expired"
    assert code_of(mixed, signed(expired, rsa_key("a"), "rsa-a")) == "token_expired"
    cases = {
        "wrong secret": hs256(claims(), "another-secret-" + "z" * 30),
        "wrong RSA key": signed(claims(), rsa_key("other"), "rsa-a"),
        "wrong issuer": hs256(claims(iss="https://evil.test")),
        "no issuer": hs256(claims(iss=None)),
        "wrong audience": hs256(claims(aud="anon")),
        "no expiry": hs256(claims(exp=None)),
        "alg none": unsigned(claims()),
        "alg not configured": jwt_hs512(),
        "kid of another key type": signed(claims(), rsa_key("a"), "ec-a"),
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        assert code_of(mixed, token) == "invalid_token", name
    # No HS/RS confusion: a JWKS configuration refuses HS256, whatever the key.
    assert code_of(jwks_only, hs256_with_public_key(claims(), rsa_key("a"), "rsa-a")) \
        == "invalid_token"
    assert code_of(jwks_only, hs256(claims())) == "invalid_token"
    # ... and with a secret configured too, HS256 is checked against the secret only.
    assert code_of(mixed, hs256_with_public_key(claims(), rsa_key("a"), "rsa-a")) \
        == "invalid_token"
    with pytest.raises(UnknownKey):
        mixed.verify(signed(claims(), rsa_key("b"), "rsa-b"))


def jwt_hs512() -> str:
    import jwt

    return jwt.encode(claims(), SECRET * 2, algorithm="HS512")


def test_jwks_parsing_skips_keys_that_cannot_verify() -> None:
    document = jwks((rsa_key("a"), "rsa-a"))
    document["keys"] += [{"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
                         {**document["keys"][0], "kid": "enc", "use": "enc"},
                         {"kty": "RSA", "kid": "broken", "n": "AQAB"}, "junk"]
    assert set(parse_jwks(document)) == {"rsa-a"}
    with pytest.raises(ValueError):
        parse_jwks({"no": "keys"})


def test_leeway() -> None:
    lenient = verifier(external_jwt_secret=SECRET, external_jwt_leeway_s=30)
    assert lenient.verify(hs256(claims(exp=int(time.time()) - 5))).payload["exp"]


def test_token_service_hands_foreign_tokens_to_the_external_verifier() -> None:
    tokens = TokenService("ours-" + "x" * 40, 900)
    seen: list[str] = []

    def external(token: str) -> Any:
        seen.append(token)
        raise TokenError("invalid_token", "nope")

    tokens.external = external
    ours, _ = tokens.issue_access(7)
    assert tokens.verify_access(ours).user_id == 7 and not seen
    with pytest.raises(TokenError):
        tokens.verify_access(hs256(claims()))
    assert len(seen) == 1
    expired, _ = tokens.issue_access(7, ttl_s=-10)
    with pytest.raises(TokenError) as info:
        tokens.verify_access(expired)
    assert info.value.code == "token_expired" and len(seen) == 1  # ours: not handed on


def test_tokens_in_scopes_and_frames() -> None:
    assert scope_token({"type": "http", "headers": [(b"authorization", b"Bearer abc")]}) == "abc"
    assert scope_token({"type": "http", "headers": [(b"authorization", b"Basic abc")]}) is None
    assert scope_token({"type": "websocket", "query_string": b"a=1&token=x%2By"}) == "x+y"
    assert frame_token('{"type":"auth","token":"t"}') == "t"
    assert frame_token('{"type":"join","topic":"webinar:1:messages"}') is None
    assert frame_token('{"token": 5}') is None and frame_token('"token"') is None


# --- the refresher -------------------------------------------------------------------------------

async def test_refresher_reads_periodically_and_rate_limits_unknown_kids() -> None:
    documents = [jwks((rsa_key("a"), "rsa-a"))]
    requests: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(time.monotonic())
        return httpx.Response(200, json=documents[-1])

    cfg = config(external_jwt_jwks_url="https://issuer.test/jwks",
                 external_jwt_jwks_refresh_s=1, external_jwt_jwks_min_refetch_s=30)
    v = ExternalVerifier(cfg)
    removed: list[set[str]] = []
    refresher = JwksRefresher(v, on_keys_removed=removed.append,
                              transport=httpx.MockTransport(handler))
    await refresher.start()
    try:
        assert set(v.keys) == {"rsa-a"} and len(requests) == 1
        documents.append(jwks((rsa_key("b"), "rsa-b")))
        # Three unknown kids at once: one read between them; a fourth soon after: none.
        results = await asyncio.gather(*(refresher.refetch_for("rsa-b") for _ in range(3)))
        assert results == [True, True, True] and len(requests) == 2
        assert set(v.keys) == {"rsa-b"} and removed == [{"rsa-a"}]
        assert await refresher.refetch_for("made-up") is False and len(requests) == 2
        # The periodic read (every second here) goes on regardless.
        await eventually(lambda: len(requests) >= 3, timeout=5)
    finally:
        await refresher.close()


async def test_refresher_keeps_its_keys_when_a_read_fails() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, json=jwks((ec_key("a"), "ec-a")))
        return httpx.Response(503)

    cfg = config(external_jwt_jwks_url="https://issuer.test/jwks",
                 external_jwt_jwks_min_refetch_s=0)
    v = ExternalVerifier(cfg)
    refresher = JwksRefresher(v, transport=httpx.MockTransport(handler))
    await refresher.start()
    try:
        assert await refresher.refetch_for("x") is False
        assert set(v.keys) == {"ec-a"}
    finally:
        await refresher.close()

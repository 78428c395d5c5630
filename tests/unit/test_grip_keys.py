"""GRIP verify keys given as JWKs (RSA, oct) verify Grip-Sig with their one algorithm; keys of
another kind, malformed JWKs and configurations of the wrong type are refused when the stream is built."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from eventstream import EventStream, parse_grip_uri
from eventstream._grip._config import GripProxy, SigCheck, check_grip_sig

NOT_A_JWK = "verify_key looks like a JWK but is not valid"
KEY = "a-signing-key-long-enough-for-hs512-too-0123456789-0123456789-0123"


def claims() -> dict[str, Any]:
    return {"iss": "cdn", "exp": int(time.time()) + 3600}


def proxy_with(verify_key: str) -> GripProxy:
    return GripProxy.from_config({"control_uri": "http://h", "verify_iss": "cdn", "verify_key": verify_key})


def test_an_rsa_jwk_verifies_rs256_only() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    proxy = proxy_with(json.dumps(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)))
    assert check_grip_sig(jwt.encode(claims(), private, algorithm="RS256"), [proxy]) is SigCheck.SIGNED
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert check_grip_sig(jwt.encode(claims(), other, algorithm="RS256"), [proxy]) is SigCheck.FORBIDDEN
    assert check_grip_sig(jwt.encode(claims(), private, algorithm="PS256"), [proxy]) is SigCheck.FORBIDDEN


def test_an_oct_jwk_verifies_hs256_only() -> None:
    jwk = json.loads(jwt.algorithms.HMACAlgorithm.to_jwk(KEY.encode()))
    proxy = proxy_with(json.dumps(jwk))
    assert check_grip_sig(jwt.encode(claims(), KEY, algorithm="HS256"), [proxy]) is SigCheck.SIGNED
    assert check_grip_sig(jwt.encode(claims(), KEY, algorithm="HS512"), [proxy]) is SigCheck.FORBIDDEN
    assert check_grip_sig(jwt.encode(claims(), KEY + "x", algorithm="HS256"), [proxy]) is SigCheck.FORBIDDEN


def ed25519_pem() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def ed25519_jwk() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return json.dumps(jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True))


@pytest.mark.parametrize(
    ("verify_key", "match"),
    [
        # Named: a fresh key each run would give the test a new id each run.
        pytest.param(ed25519_pem(), "verify_key: unsupported public key type", id="ed25519-pem"),
        pytest.param(ed25519_jwk(), "verify_key: unsupported JWK key type 'OKP'", id="ed25519-jwk"),
        # PyJWT's own errors (InvalidKeyError, a KeyError for a missing member) were let through.
        ('{"kty": "RSA", "n": "not base64 at all!"}', NOT_A_JWK),
        ('{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}', NOT_A_JWK),
        ('{"kty": "oct"}', NOT_A_JWK),
        ('{"kty": "nope"}', NOT_A_JWK),
        ("{}", NOT_A_JWK),
        ("{not json", NOT_A_JWK),
    ],
)
def test_keys_of_another_kind_or_malformed_are_refused(verify_key: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EventStream(grip={"control_uri": "http://h", "verify_key": verify_key})


@pytest.mark.parametrize("config", [5, b"http://h", None])
def test_a_grip_url_must_be_a_str(config: Any) -> None:
    with pytest.raises(TypeError, match="a GRIP URL must be a str, not"):
        parse_grip_uri(config)


@pytest.mark.parametrize("config", [5, b"http://h"])
def test_a_proxy_config_must_be_a_url_or_a_mapping(config: Any) -> None:
    with pytest.raises(TypeError, match="a GRIP proxy config must be a URL or a mapping, not"):
        GripProxy.from_config(config)

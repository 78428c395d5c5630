"""Keys and JWTs for the authentication tests (real keys, made once per process)."""

from __future__ import annotations

import functools
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = "s3cret-for-tests-only-0123456789abcdef"
OTHER_SECRET = "another-apps-secret-0123456789abcdef!!"
TICKET_SECRET = "ticket-secret-for-tests-0123456789abcd"
ISSUER = "https://issuer.test"
AUDIENCE = "eventstream-tests"


@functools.cache
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_public_pem() -> bytes:
    return (
        rsa_private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def claims(lifetime: float = 300, **extra: Any) -> dict[str, Any]:
    """Valid claims for ``sub`` alice on this issuer and audience, expiring in ``lifetime`` seconds."""
    now = time.time()
    return {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": now + lifetime, **extra}


def hs256(lifetime: float = 300, *, secret: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(lifetime, **extra), secret, algorithm="HS256")


def rs256(lifetime: float = 300, **extra: Any) -> str:
    return jwt.encode(claims(lifetime, **extra), rsa_private_key(), algorithm="RS256")

"""Checking a JWT: its signature with a pinned key and algorithm list, then its registered claims.

PyJWT and cryptography are imported where a key is loaded or a token read
(see ``_auth/__init__.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._base import Unauthorized

__all__ = ["ASYMMETRIC", "TokenVerifier", "unverified_kid"]

_HMAC = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_MIN_SECRET = 32  # bytes: RFC 7518 section 3.2 wants a key at least as long as HS256's hash
_MAX_JWKS_KEYS = 100


class TokenVerifier:
    """Verifies JWTs against exactly one kind of key, with algorithms pinned to that kind.

    Give exactly one of ``secret`` (an HMAC secret, at least 32 bytes),
    ``public_key`` (a PEM public key: RSA, EC or Ed25519/Ed448) or ``jwks`` (a
    JWKS document as a mapping or JSON text, public keys only). A token is
    accepted when its signature verifies with one of ``algorithms`` (by default
    the key's own: ``HS256``, ``RS256``, ``ES256``/``ES384``/``ES512`` by curve,
    ``EdDSA``), and ``exp``, ``nbf``, ``iss`` (when ``issuer`` is given) and
    ``aud`` (when ``audience`` is given) hold, with ``leeway`` seconds of clock
    skew. The claims in ``required`` must be present.

    Raises:
        ValueError: not exactly one key, a short secret, a key that does not
            load, a JWKS with a symmetric (``oct``) or unusable key, or an
            algorithm that is ``none``, unknown, or of another family than the
            key (HMAC algorithms with a public key, or the reverse: the
            HS/RS confusion).
        TypeError: a key of the wrong type.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        jwks: Mapping[str, Any] | str | None = None,
        algorithms: Sequence[str] | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        required: Sequence[str] = ("exp",),
    ) -> None:
        given = [key for key in (secret, public_key, jwks) if key is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of secret, public_key and jwks")
        if isinstance(algorithms, str):
            raise TypeError("algorithms must be a sequence of names, not a str")
        if leeway < 0:
            raise ValueError(f"leeway must be >= 0, not {leeway!r}")
        self.issuer: str | None = issuer
        self.audience: str | None = audience
        self.leeway: float = float(leeway)
        self.required: tuple[str, ...] = tuple(required)
        self._keys: dict[str | None, Any] = {}
        if secret is not None:
            material = secret.encode("utf-8") if isinstance(secret, str) else secret
            if not isinstance(material, bytes):
                raise TypeError(f"secret must be str or bytes, not {type(secret).__name__}")
            if len(material) < _MIN_SECRET:
                raise ValueError(f"an HMAC secret needs at least {_MIN_SECRET} bytes, not {len(material)}")
            family, default = _HMAC, ["HS256"]
            self._keys[None] = material
        elif public_key is not None:
            family = ASYMMETRIC
            key = _load_public_key(public_key)
            default = [_default_algorithm(key)]
            self._keys[None] = key
        else:
            assert jwks is not None
            family = ASYMMETRIC
            default = self._load_jwks(jwks)
        chosen = list(default if algorithms is None else algorithms)
        if not chosen:
            raise ValueError("algorithms must not be empty")
        for name in chosen:
            if not isinstance(name, str) or name.lower() == "none":
                raise ValueError(f"algorithm {name!r} is not allowed")
            if name not in family:
                kind = "an HMAC secret" if family is _HMAC else "a public key"
                raise ValueError(f"algorithm {name!r} cannot be used with {kind}")
        self.algorithms: tuple[str, ...] = tuple(dict.fromkeys(chosen))

    def _load_jwks(self, jwks: Mapping[str, Any] | str) -> list[str]:
        document = json.loads(jwks) if isinstance(jwks, str) else jwks
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise ValueError("a JWKS document is an object with a 'keys' list")
        keys = document["keys"]
        if not keys or len(keys) > _MAX_JWKS_KEYS:
            raise ValueError(f"a JWKS document needs 1 to {_MAX_JWKS_KEYS} keys, not {len(keys)}")
        import jwt  # (see _auth/__init__.py: not at startup)

        algorithms: list[str] = []
        for entry in keys:
            if not isinstance(entry, Mapping) or entry.get("kty") == "oct" or "d" in entry:
                raise ValueError("a JWKS document for verifying tokens holds public keys only")
            if entry.get("use", "sig") != "sig":
                continue
            try:
                jwk = jwt.PyJWK(dict(entry))
            except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"a JWKS key does not load: {exc}") from None
            except NotImplementedError:  # what PyJWT raises for "alg": "none"
                raise ValueError(f"a JWKS key does not load: its alg is {entry.get('alg')!r}") from None
            kid = entry.get("kid")
            if kid in self._keys:
                raise ValueError(f"two JWKS keys have the kid {kid!r}")
            self._keys[kid if isinstance(kid, str) else None] = jwk
            algorithms.append(jwk.algorithm_name)
        if not self._keys:
            raise ValueError("the JWKS document has no signing key")
        return algorithms

    def knows(self, kid: str) -> bool:
        """Whether a token with this ``kid`` has a key here (a single key without a kid takes any)."""
        return kid in self._keys or (len(self._keys) == 1 and None in self._keys)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once its signature and registered claims check out.

        Raises:
            Unauthorized: the token is malformed, signed with another key or
                algorithm (``none`` included), expired, not yet valid, for
                another issuer or audience, or lacks a required claim. The
                message says which, for the server's log.
        """
        import jwt  # (see _auth/__init__.py: not at startup)

        try:
            key = self._keys.get(None)
            if len(self._keys) > 1 or key is None:
                kid = jwt.get_unverified_header(token).get("kid")
                key = self._keys.get(kid) if isinstance(kid, str) else None
                if key is None:
                    raise Unauthorized("no key has the token's kid")
            if isinstance(key, jwt.PyJWK):
                if key.algorithm_name not in self.algorithms:
                    raise Unauthorized("the key's algorithm is not allowed")
                algorithms = [key.algorithm_name]
            else:
                algorithms = list(self.algorithms)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": list(self.required)},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token refused: {exc}") from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:  # what a malformed token may raise
            raise Unauthorized(f"token refused: {type(exc).__name__}") from None
        return claims


def _load_public_key(pem: str | bytes) -> Any:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    if not isinstance(data, bytes):
        raise TypeError(f"public_key must be PEM text or bytes, not {type(pem).__name__}")
    from cryptography.hazmat.primitives.serialization import (
        load_pem_public_key,  # (see _auth/__init__.py: not at startup)
    )

    try:
        return load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"public_key is not a PEM public key: {exc}") from None


def _default_algorithm(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import (  # (see _auth/__init__.py: not at startup)
        ec,
        ed448,
        ed25519,
        rsa,
    )

    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        try:
            return _CURVES[key.curve.name]
        except KeyError:
            raise ValueError(f"the EC curve {key.curve.name} has no JWT algorithm") from None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise ValueError(f"a {type(key).__name__} cannot verify JWTs")


def unverified_kid(token: str) -> str | None:
    """The ``kid`` of ``token``'s header, not verified, or ``None`` (none, or not a JWT)."""
    import jwt  # (see _auth/__init__.py: not at startup)

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError):
        return None
    return kid if isinstance(kid, str) else None

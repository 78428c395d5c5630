"""GRIP proxy configuration: ``GRIP_URL`` parsing, keys, publish auth and ``Grip-Sig`` checks.

PyJWT and cryptography are imported when a key is first read, signed with or
checked against (see ``_grip/__init__.py``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["GripProxy", "SigCheck", "check_grip_sig", "parse_grip_uri", "proxies_from_config"]

_LIFTED = {"iss": "control_iss", "key": "key", "verify-iss": "verify_iss", "verify-key": "verify_key"}
_CONFIG_KEYS = frozenset({"control_uri", "control_iss", "key", "verify_iss", "verify_key", "user", "pass"})


def _decode_key(value: str, name: str) -> str | bytes:
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"GRIP URL parameter {name!r} is not valid base64: {exc}") from None
    return value


def parse_grip_uri(url: str) -> dict[str, Any]:
    """Split a ``GRIP_URL`` into a proxy configuration, as the GRIP libraries do.

    ``iss``, ``key``, ``verify-iss`` and ``verify-key`` query parameters are
    lifted out (``key`` and ``verify-key`` values starting with ``base64:``
    are decoded to bytes; ``+`` stays a plus), other parameters stay in
    ``control_uri``, one trailing ``/`` of the path is dropped, and
    ``user:pass@`` becomes ``user`` and ``pass`` (sent as Basic auth).

    >>> parse_grip_uri("http://localhost:5561/?iss=me&key=base64:aGk=")
    {'control_uri': 'http://localhost:5561', 'control_iss': 'me', 'key': b'hi'}

    Raises:
        ValueError: the URL is not an absolute http(s) URL with a host, or a
            parameter is malformed.
    """
    if not isinstance(url, str):
        raise TypeError(f"a GRIP URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed GRIP URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"GRIP URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"GRIP URL has no host: {url!r}")
    result: dict[str, Any] = {}
    kept: list[tuple[str, str]] = []
    for pair in parts.query.split("&") if parts.query else ():
        name, _, raw = pair.partition("=")
        name, value = unquote(name), unquote(raw)
        if name in _LIFTED:
            if value:
                target = _LIFTED[name]
                result[target] = _decode_key(value, name) if target.endswith("key") else value
        elif name:
            kept.append((name, value))
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    query = urlencode(kept, quote_via=quote)
    config: dict[str, Any] = {"control_uri": urlunsplit((parts.scheme, netloc, path, query, ""))}
    if parts.username is not None:
        config["user"] = unquote(parts.username)
        config["pass"] = unquote(parts.password or "")
    config.update(result)
    return config


class _KeyKind(enum.Enum):
    HMAC = "HS256"
    EC = "ES256"
    RSA = "RS256"


def _verify_key(key: str | bytes) -> tuple[Any, str]:
    """The key object and the one algorithm pinned for it."""
    import jwt  # (see _grip/__init__.py: not at startup)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    text = key.decode("latin-1") if isinstance(key, bytes) else key
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            public = serialization.load_pem_public_key(stripped.encode("ascii"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"verify_key looks like PEM but is not a public key: {exc}") from None
        if isinstance(public, ec.EllipticCurvePublicKey):
            return public, _KeyKind.EC.value
        if isinstance(public, rsa.RSAPublicKey):
            return public, _KeyKind.RSA.value
        raise ValueError(f"verify_key: unsupported public key type {type(public).__name__}")
    if stripped.startswith("{"):
        try:
            jwk = jwt.PyJWK(json.loads(stripped))
        except (ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:  # PyJWT's InvalidKeyError too
            raise ValueError(f"verify_key looks like a JWK but is not valid: {exc}") from None
        kty = jwk.key_type
        if kty == "EC":
            return jwk.key, _KeyKind.EC.value
        if kty == "RSA":
            return jwk.key, _KeyKind.RSA.value
        if kty == "oct":
            return jwk.key, _KeyKind.HMAC.value
        raise ValueError(f"verify_key: unsupported JWK key type {kty!r}")
    return key, _KeyKind.HMAC.value


@dataclass(frozen=True)
class GripProxy:
    """One GRIP proxy: where to publish, how to authenticate, how to check its ``Grip-Sig``."""

    control_uri: str
    control_iss: str | None = None
    key: str | bytes | None = None
    verify_iss: str | None = None
    verify_key: str | bytes | None = None
    user: str | None = None
    password: str | None = None
    _verifier: tuple[Any, str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parse_grip_uri(self.control_uri)  # validates
        key = self.verify_key
        if key is None and self.control_iss is not None and self.key is not None:
            # With iss and a shared key, the publish key also verifies Grip-Sig.
            key = self.key
        if key is not None:
            object.__setattr__(self, "_verifier", _verify_key(key))

    @classmethod
    def from_config(cls, config: str | Mapping[str, Any]) -> GripProxy:
        """Build from a GRIP URL or a mapping such as :func:`parse_grip_uri` returns.

        Raises:
            ValueError: the URL or a value is malformed, ``control_uri`` is
                missing, or the mapping has unknown keys.
        """
        if isinstance(config, str):
            config = parse_grip_uri(config)
        if not isinstance(config, Mapping):
            raise TypeError(f"a GRIP proxy config must be a URL or a mapping, not {type(config).__name__}")
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown GRIP config keys: {', '.join(sorted(unknown))}")
        if "control_uri" not in config:
            raise ValueError("a GRIP config mapping needs 'control_uri'")
        parsed = parse_grip_uri(config["control_uri"])
        values = {**parsed, **{k: v for k, v in config.items() if k != "control_uri"}}
        return cls(
            control_uri=parsed["control_uri"],
            control_iss=values.get("control_iss"),
            key=values.get("key"),
            verify_iss=values.get("verify_iss"),
            verify_key=values.get("verify_key"),
            user=values.get("user"),
            password=values.get("pass"),
        )

    @property
    def publish_url(self) -> str:
        parts = urlsplit(self.control_uri)
        return urlunsplit((parts.scheme, parts.netloc, parts.path + "/publish/", parts.query, ""))

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` for a publish: a JWT with ``iss`` and ``key``, the key alone, or Basic."""
        if self.control_iss is not None and self.key is not None:
            import jwt  # (see _grip/__init__.py: not at startup)

            claims = {"iss": self.control_iss, "exp": int(time.time()) + 600}
            with warnings.catch_warnings():
                # Short shared keys (Pushpin's default is 8 bytes) are the
                # operator's choice; do not warn about them on every publish.
                warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                token = jwt.encode(claims, self.key, algorithm="HS256")
            return {"Authorization": f"Bearer {token}"}
        if self.key is not None:
            key = self.key.decode("latin-1") if isinstance(self.key, bytes) else self.key
            return {"Authorization": f"Bearer {key}"}
        if self.user is not None:
            credentials = f"{self.user}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
        return {}

    def validates(self, token: str) -> bool:
        """Whether ``token`` is a valid ``Grip-Sig`` from this proxy (``False`` without a verify key)."""
        if self._verifier is None:
            return False
        key, algorithm = self._verifier
        import jwt  # (see _grip/__init__.py: not at startup)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    issuer=self.verify_iss,
                    options={"require": ["exp"], "verify_iss": self.verify_iss is not None},
                )
        except jwt.PyJWTError:
            return False
        return True


def proxies_from_config(
    grip: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]],
) -> tuple[GripProxy, ...]:
    """Normalise ``EventStream(grip=...)``: one URL or mapping, or a list of them.

    Raises:
        ValueError: a configuration is malformed, or the list is empty.
    """
    configs = [grip] if isinstance(grip, (str, Mapping)) else list(grip)
    if not configs:
        raise ValueError("grip is an empty list: give at least one proxy, or None")
    return tuple(GripProxy.from_config(config) for config in configs)


class SigCheck(enum.Enum):
    """What a request's ``Grip-Sig`` says about it."""

    DIRECT = "direct"  #: not proxied: serve the stream directly
    PROXIED = "proxied"  #: came through a GRIP proxy (not verified: a proxy has no verify key)
    SIGNED = "signed"  #: came through a GRIP proxy, and its signature validated
    FORBIDDEN = "forbidden"  #: claims a proxy but no signature validates: 403


def check_grip_sig(token: str | None, proxies: Sequence[GripProxy]) -> SigCheck:
    """Apply the GRIP rules to a request's ``Grip-Sig`` header value.

    Without the header, or without proxies, the request is direct. If some
    proxy has no verify key, any ``Grip-Sig`` is trusted (the proxy strips
    the header from client requests). If every proxy has one, a signature
    must validate with one of them (algorithm pinned per key, ``exp``
    required, ``iss`` checked when configured); otherwise the request is
    refused, because a client is trying to pass for the proxy.
    """
    if token is None or not proxies:
        return SigCheck.DIRECT
    if any(proxy.validates(token) for proxy in proxies):
        return SigCheck.SIGNED
    if any(proxy._verifier is None for proxy in proxies):
        return SigCheck.PROXIED
    return SigCheck.FORBIDDEN

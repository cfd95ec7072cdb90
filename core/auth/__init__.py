"""Authentication concepts below the managers (``am.jwt`` and ``am.api_keys`` are their facades).

- ``identity`` — who is calling (:class:`Principal`) and what an endpoint asks (:class:`Requirement`);
- ``keys`` — the JWT signing key and the keys that still verify;
- ``tokens`` — issuing access/refresh pairs and verifying them strictly, locally;
- ``families`` — refresh-token families: rotation by compare-and-set, reuse detection;
- ``revocation`` — the deny-list of JWTs and API keys in the database and Redis;
- ``users`` — the user store and its administration (roles, active flag, token version);
- ``api_keys`` — the API key store: hashing, record cache, batched last-used times.
"""

"""One line for a failed TLS handshake: what went wrong, and the setting that fixes it.

Client libraries wrap the `ssl` module's error differently — redis-py in a ConnectionError
whose text repeats it (and `__context__`), kombu in an OperationalError, pika in an
AMQPConnectionError holding a StreamLostError, requests in an SSLError around urllib3's
MaxRetryError — so the whole chain (causes, contexts, exception arguments, `reason`) is read.
The OpenSSL reasons matched here are those of OpenSSL 1.1/3.x as Python reports them.
"""

from __future__ import annotations

import re

FIX = {
    "verify": "give the CA that signed the server's certificate: ?ssl_ca_certs=FILE on the "
              "URL, or ssl_ca_certs (ca_certs for AMQP) in broker_use_ssl / "
              "redis_backend_use_ssl",
    "hostname": "connect with a host name the certificate lists (its subjectAltName), or set "
                "?ssl_check_hostname=false",
    "expired": "the server's certificate is outside its validity dates (or this host's clock "
               "is wrong): renew the certificate",
    "client": "the server requires a client certificate: ?ssl_certfile=FILE&ssl_keyfile=FILE "
              "on the URL, or ssl_certfile/ssl_keyfile (certfile/keyfile for AMQP) in "
              "broker_use_ssl",
    "client_rejected": "the server does not accept the client certificate given: use one "
                       "signed by a CA the server trusts",
    "plain": "the server does not answer TLS on this port: use the plain scheme (redis://, "
             "amqp://, http://) or the server's TLS port",
    "speaks_tls": "the port expects TLS: use https:// (rediss://, amqps:// for brokers)",
    "other": "check the TLS settings (CA, client certificate, TLS versions) against the "
             "server's",
}

# the shape of this module's own lines, so a wrapped one is not described twice
ALREADY = re.compile(r"(^|: )TLS [a-z ]+\(")
_VERIFY = re.compile(r"certificate verify failed: (.+)", re.I)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps, each once."""
    out: list[BaseException] = []
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or any(e is x for x in out):
            continue
        out.append(e)
        # `raise X from None`: X already says what it means (celeryctl's own errors)
        context = None if e.__suppress_context__ else e.__context__
        stack += [e.__cause__, context, getattr(e, "reason", None),
                  *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]]
    return out


def describe_tls_error(exc: BaseException, fix: dict[str, str] | None = None) -> str | None:
    """"TLS <what failed> (<OpenSSL's reason>): <fix>", or None when the failure is not a TLS
    one. `fix` replaces some of the default remedies (the management API names its flag).
    A text already in this shape (a failover list's, a wrapper's) is returned as it is."""
    from celeryctl.urls import SECRETS

    if ALREADY.search(str(exc)):  # described once already (a failover list, a wrapper)
        return SECRETS.scrub(" ".join(str(exc).split()))
    fixes = dict(FIX, **(fix or {}))
    chain = _chain(exc)
    texts = [" ".join(f"{type(e).__name__}: {e}".split()) for e in chain]
    joined = " | ".join(texts)
    low = joined.lower()
    kind = what = reason = None
    if "certificate verify failed" in low:
        for e in chain:
            reason = getattr(e, "verify_message", None)
            if reason:
                break
        if not reason:
            m = next((m for m in (_VERIFY.search(str(e)) for e in chain) if m), None)
            reason = "certificate verify failed" if m is None else \
                re.sub(r"\s*\(_ssl\.c:\d+\)", "", m.group(1)).rstrip(".'\") ")
        r = reason.lower()
        if "mismatch" in r or "not valid for" in r:
            kind, what = "hostname", "host name check failed"
        elif "expired" in r or "not yet valid" in r:
            kind, what = "expired", "certificate verification failed"
        else:
            kind, what = "verify", "certificate verification failed"
    elif "certificate_required" in low or "certificate required" in low or \
            "peer did not return a certificate" in low:
        kind, what, reason = "client", "handshake refused", "the server requires a client " \
            "certificate and none was sent"
    elif "alert_unknown_ca" in low or "alert unknown ca" in low or \
            "alert_bad_certificate" in low or "alert bad certificate" in low:
        kind, what, reason = "client_rejected", "handshake refused", \
            "the server rejected the client certificate"
    elif "eof occurred in violation of protocol" in low or \
            "unexpected_eof_while_reading" in low:
        # TLS 1.3: the server checks the client's certificate after the client considers the
        # handshake done; its alert is often lost and the client sees only the close
        kind, what, reason = "client", "connection closed by the server right after the " \
            "handshake", "most often: a client certificate it requires is missing or not trusted"
    elif "wrong_version_number" in low or "wrong version number" in low or \
            "record_layer_failure" in low or "packet_length_too_long" in low or \
            "http_request" in low:
        kind, what, reason = "plain", "handshake failed", "the server did not answer TLS"
    elif "badstatusline('\\x15\\x03" in low:
        kind, what, reason = "speaks_tls", "expected", "a plain-text request got a TLS alert"
    elif any(type(e).__name__ in ("SSLError", "SSLCertVerificationError", "SSLEOFError")
             or "[ssl" in str(e).lower() for e in chain):
        m = re.search(r"\[SSL: ([A-Z0-9_]+)\]\s*([^(]*)", joined)
        kind, what = "other", "handshake failed"
        reason = (m.group(2).strip() or m.group(1)) if m else "TLS error"
    if kind is None:
        return None
    return SECRETS.scrub(f"TLS {what} ({reason}): {fixes[kind]}")

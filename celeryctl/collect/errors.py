"""What kind of failure an error is — one place for every collector.

A source (and each read of it) ends in one of these states, and each needs a different fix:

- ``observed``: it answered.
- ``permission-denied``: the server answered and refused this operation to this account
  (Redis ``NOPERM`` from an ACL, or a command renamed/disabled — ``unknown command``;
  AMQP ``403 ACCESS_REFUSED`` on a declare, ``530 NOT_ALLOWED`` on a vhost; management API
  ``401 Not management user`` / ``Not monitor user`` / ``User not authorised to access
  virtual host``). Never reported as "unreachable".
- ``auth-failed``: the credentials were rejected (wrong password, unknown user, a password
  required and none given).
- ``unreachable``: refused, timed out, reset, DNS, TLS handshake failed — nothing usable
  answered.
- ``not-configured``: nothing was given to look at (no management API URL, no backend).

`classify(exc)` maps any exception a client library raises to (state, one line without
secrets); `Denied` is what a collector raises when it knows which operation was refused and
which privilege would allow it.
"""

from __future__ import annotations

OBSERVED = "observed"
DENIED = "permission-denied"
AUTH_FAILED = "auth-failed"
UNREACHABLE = "unreachable"
NOT_CONFIGURED = "not-configured"
NOT_CHECKED = "not-checked"  # a kind of source celeryctl cannot probe (database backend)
FAILED = "failed"  # anything else: unreadable data, an unexpected library error
NOT_ASKED = "not-asked"  # a read this command did not make (or measures only on request)

STATES = (OBSERVED, DENIED, AUTH_FAILED, UNREACHABLE, NOT_CONFIGURED, NOT_CHECKED, FAILED,
          NOT_ASKED)



class Denied(Exception):
    """An operation the server refused to this account. `operation` names what was refused
    ("CLIENT LIST", "declare exchange 'reply.celery.pidbox'"), `privilege` what would allow
    it ("ACL +client|list", "configure permission on ^reply\\.celery\\.pidbox$")."""

    kind = DENIED

    def __init__(self, operation: str, privilege: str, detail: str = "") -> None:
        self.operation = operation
        self.privilege = privilege
        self.detail = detail
        text = f"permission denied: {operation} refused"
        if detail:
            text += f" ({detail})"
        if privilege:
            text += f"; needs {privilege}"
        super().__init__(text)


class AuthFailed(Exception):
    kind = AUTH_FAILED


class NotConfigured(Exception):
    kind = NOT_CONFIGURED


# --- Redis -------------------------------------------------------------------------------

def redis_denial(exc: BaseException) -> str | None:
    """Why Redis refused a command to this account, or None when `exc` is not a refusal:
    an ACL (`NOPERM`), or a command renamed away or disabled (`unknown command`, or the
    "not allowed" managed services answer)."""
    text = " ".join(str(exc).split())
    low = text.lower()
    cls = type(exc).__name__
    if cls == "NoPermissionError" or low.startswith("noperm") or "no permissions to" in low \
            or "user executing the script can't run" in low:
        return "refused by the ACL of this user"
    if "exec without multi" in low:  # MULTI itself was refused, then EXEC had nothing
        return "MULTI refused by the ACL of this user (or renamed)"
    if "unknown command" in low or "unknown subcommand" in low:
        return "the command is renamed or disabled on this server"
    if "command not allowed" in low or "command is not allowed" in low or \
            "not allowed" in low and "command" in low:
        return "the command is not allowed on this (managed) server"
    return None


class redis_op:
    """`with redis_op("CLIENT LIST", "+client|list"):` — a Redis refusal inside becomes a
    `Denied` naming the operation and the ACL rule that allows it."""

    def __init__(self, operation: str, acl: str) -> None:
        self.operation = operation
        self.acl = acl

    def __enter__(self) -> redis_op:
        return self

    def __exit__(self, et, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, Denied):
            return False
        why = redis_denial(exc)
        if why is None:
            return False
        if "renamed or disabled" in why or "not allowed" in why:
            # no ACL grants a command the server renamed away: say what else helps
            raise Denied(self.operation, "", why + "; no account can run it here") from None
        raise Denied(self.operation, f"ACL {self.acl}" if self.acl else "", why) from None


# --- classification ----------------------------------------------------------------------

def classify(exc: BaseException) -> tuple[str, str]:
    """(state, one line) for any exception a collector lets through. The line carries no
    secret (`SECRETS.scrub`) and at most 300 characters."""
    from celeryctl.urls import SECRETS

    kind = getattr(exc, "kind", None)
    text = " ".join((str(exc).strip() or type(exc).__name__).split())
    if kind in STATES:
        return kind, _cut(SECRETS.scrub(text))
    # TLS first: a certificate problem reads like a network one otherwise, and each has its
    # own fix (CA, host name, client certificate)
    from celeryctl.collect.tls_errors import describe_tls_error

    tls = describe_tls_error(exc)
    if tls is not None:
        return UNREACHABLE, _cut(tls)
    kind, summary = _guess(exc, text)
    text = _cut(SECRETS.scrub(text))
    if summary is None or summary.split(" (")[0].lower() in text.lower():
        return kind, text
    return kind, f"{summary}: {text}"


def _cut(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _guess(exc: BaseException, text: str) -> tuple[str, str | None]:
    low = text.lower()
    cls = type(exc).__name__
    code = getattr(exc, "reply_code", None) or getattr(exc, "code", None)
    # TLS first: a certificate problem is not a network one, and its fix is a CA file
    if cls in ("SSLCertVerificationError", "SSLError") or "certificate verify failed" in low \
            or "ssl:" in low and ("certificate" in low or "handshake" in low):
        return UNREACHABLE, "TLS handshake failed"
    # authentication
    if "authentication required" in low or "noauth" in low or \
            "must be called with the client already authenticated" in low:
        return AUTH_FAILED, "authentication required (the server has a password; none was given)"
    if cls in ("AuthenticationError", "ProbableAuthenticationError",
               "AuthenticationWrongNumberOfArgsError") or "wrongpass" in low or \
            "invalid username-password" in low or "login was refused" in low or \
            "login failed" in low:
        return AUTH_FAILED, "authentication failed (wrong user name or password)"
    # refusals by an answering server
    if redis_denial(exc) is not None:
        return DENIED, f"permission denied ({redis_denial(exc)})"
    if cls == "ProbableAccessDeniedError" or "not_allowed" in low and "vhost" in low and \
            "refused" in low:
        return DENIED, "permission denied (no permissions on this virtual host for this user)"
    if "not_allowed" in low and "vhost" in low and "not found" in low:
        return UNREACHABLE, "no such virtual host on this broker"
    if code == 403 or "access_refused" in low or "access refused" in low:
        return DENIED, "permission denied (ACCESS_REFUSED: this user lacks a permission)"
    # nothing usable answered
    if "refused" in low:
        return UNREACHABLE, "connection refused"
    if "timed out" in low or "timeout" in low:
        return UNREACHABLE, "timed out"
    if "name or service not known" in low or "nodename nor servname" in low or \
            "temporary failure in name resolution" in low:
        return UNREACHABLE, "host name does not resolve"
    if "reset by peer" in low or "connection closed" in low or "broken pipe" in low or \
            "connection lost" in low or cls in ("ConnectionError", "OSError",
                                                 "ConnectionResetError", "AMQPConnectionError",
                                                 "StreamLostError", "OperationalError",
                                                 "IncompatibleProtocolError"):
        return UNREACHABLE, None
    return FAILED, None

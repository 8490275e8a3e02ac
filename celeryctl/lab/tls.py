"""Certificates for a TLS lab, made with the `openssl` command line (no Python crypto library).

`make_certs(DIR)` writes, once, into DIR (0700):

- `ca.crt` / `ca.key`: the lab's private CA;
- `server.crt` / `server.key`: signed by it, for `localhost` with subjectAltName
  `IP:127.0.0.1, DNS:localhost` (what clients on loopback check);
- `client.crt` / `client.key`: signed by it, for servers that require client certificates;
- `other-ca.crt` / `other-ca.key`: an unrelated CA, for "wrong CA" drills and tests;
- `wronghost.crt` / `wronghost.key`: signed by the lab CA for a name that is not this host;
- `expired.crt` / `expired.key`: signed by the lab CA, valid only in 2020.

Key files are 0600. RabbitMQ reads its copy of the server key as the `rabbitmq` user when
Debian's wrapper script drops privileges to it (see lab-notes): `server_key_for(owner)`
gives it a copy it owns, still 0600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_SAN = "IP:127.0.0.1,DNS:localhost"
DAYS = 825  # the longest validity clients accept for a server certificate


class TLSLabError(Exception):
    pass


@dataclass(frozen=True)
class LabCerts:
    dir: str

    def path(self, name: str) -> str:
        return str(Path(self.dir) / name)

    @property
    def ca(self) -> str:
        return self.path("ca.crt")

    @property
    def server_cert(self) -> str:
        return self.path("server.crt")

    @property
    def server_key(self) -> str:
        return self.path("server.key")

    @property
    def client_cert(self) -> str:
        return self.path("client.crt")

    @property
    def client_key(self) -> str:
        return self.path("client.key")

    @property
    def other_ca(self) -> str:
        return self.path("other-ca.crt")

    def as_dict(self) -> dict[str, str]:
        return {"dir": self.dir, "ca": self.ca, "server_cert": self.server_cert,
                "server_key": self.server_key, "client_cert": self.client_cert,
                "client_key": self.client_key, "other_ca": self.other_ca,
                "wronghost_cert": self.path("wronghost.crt"),
                "wronghost_key": self.path("wronghost.key"),
                "expired_cert": self.path("expired.crt"),
                "expired_key": self.path("expired.key")}


def openssl_binary() -> str:
    binary = shutil.which("openssl")
    if not binary:
        raise TLSLabError("the TLS lab needs the openssl command (apt-get install openssl)")
    return binary


def _run(*args: str, cwd: Path) -> None:
    r = subprocess.run([openssl_binary(), *args], cwd=str(cwd), capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0:
        raise TLSLabError(f"openssl {args[0]} failed: {(r.stderr or r.stdout).strip()[-400:]}")


def _new_key(d: Path, name: str) -> None:
    key = d / name
    _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", name,
         cwd=d)
    key.chmod(0o600)


def _ca(d: Path, stem: str, cn: str) -> None:
    _new_key(d, f"{stem}.key")
    _run("req", "-x509", "-new", "-key", f"{stem}.key", "-out", f"{stem}.crt", "-days",
         "3650", "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, stem: str, cn: str, usage: str, san: str | None, ca: str = "ca",
          days: int = DAYS) -> None:
    _new_key(d, f"{stem}.key")
    _run("req", "-new", "-key", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={cn}",
         cwd=d)
    ext = d / f"{stem}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _run("x509", "-req", "-in", f"{stem}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{stem}.crt", "-days", str(days), "-extfile", ext.name,
         "-sha256", cwd=d)
    (d / f"{stem}.csr").unlink(missing_ok=True)
    ext.unlink(missing_ok=True)


def _expired(d: Path) -> None:
    """A server certificate valid from 2020-01-01 to 2020-01-02: `openssl x509` cannot
    backdate, `openssl ca` can (-startdate/-enddate) with a throwaway CA database."""
    _new_key(d, "expired.key")
    _run("req", "-new", "-key", "expired.key", "-out", "expired.csr", "-subj", "/CN=localhost",
         cwd=d)
    db = d / "ca-db"
    db.mkdir(exist_ok=True)
    (db / "index.txt").write_text("")
    (db / "serial").write_text("1000\n")
    conf = db / "ca.cnf"
    conf.write_text(
        "[ca]\ndefault_ca = lab\n"
        "[lab]\n"
        f"dir = {db}\ndatabase = $dir/index.txt\nserial = $dir/serial\n"
        f"new_certs_dir = $dir\ncertificate = {d / 'ca.crt'}\nprivate_key = {d / 'ca.key'}\n"
        "default_md = sha256\npolicy = any\ncopy_extensions = none\nunique_subject = no\n"
        "x509_extensions = ext\n"
        "[any]\ncommonName = supplied\n"
        "[ext]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
        f"subjectAltName = {SERVER_SAN}\n")
    _run("ca", "-batch", "-notext", "-config", str(conf), "-in", "expired.csr", "-out",
         "expired.crt", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
         cwd=d)
    (d / "expired.csr").unlink(missing_ok=True)
    shutil.rmtree(db, ignore_errors=True)


def make_certs(d: Path) -> LabCerts:
    """Create the lab's certificates in `d` (idempotent: an existing complete set is kept)."""
    d = d.resolve()
    certs = LabCerts(str(d))
    if all(Path(p).exists() for k, p in certs.as_dict().items() if k != "dir"):
        return certs
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    _ca(d, "ca", "celeryctl lab CA")
    _ca(d, "other-ca", "celeryctl lab unrelated CA")
    _leaf(d, "server", "localhost", "serverAuth", SERVER_SAN)
    _leaf(d, "client", "celeryctl-lab-client", "clientAuth", None)
    _leaf(d, "wronghost", "wrong.celeryctl.invalid", "serverAuth", "DNS:wrong.celeryctl.invalid")
    _expired(d)
    (d / "ca.srl").unlink(missing_ok=True)
    return certs


def server_key_for(certs: LabCerts, dest_dir: Path, owner: str | None = None) -> str:
    """A copy of the server key in `dest_dir`, mode 0600, owned by `owner` when this process
    may chown (root): the key stays private and the server's own user can read it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / "server.key"
    dest.unlink(missing_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(Path(certs.server_key).read_bytes())
    if owner and os.geteuid() == 0:
        import pwd

        with contextlib.suppress(KeyError, OSError):
            pw = pwd.getpwnam(owner)
            os.chown(dest, pw.pw_uid, pw.pw_gid)
    return str(dest)


@dataclass(frozen=True)
class ServerTLS:
    """How a lab server serves TLS. `client_certs`: Redis's `--tls-auth-clients` (`no`,
    `optional`, `yes`); for RabbitMQ `yes` is `fail_if_no_peer_cert = true` on the AMQP and
    management listeners (and `verify_peer` either way, so a given certificate is checked).
    `server_cert`/`server_key` replace the good server certificate (the wrong-host and
    expired drills)."""

    certs: LabCerts
    client_certs: str = "no"
    server_cert: str | None = None
    server_key: str | None = None
    plain_port: bool = False

    @property
    def cert(self) -> str:
        return self.server_cert or self.certs.server_cert

    @property
    def key(self) -> str:
        return self.server_key or self.certs.server_key

    @property
    def requires_client_cert(self) -> bool:
        return self.client_certs == "yes"

    def redis_query(self) -> str:
        """The URL query a redis-py / kombu / Celery client needs: the CA, and the client
        certificate when the server requires one (kombu's and redis-py's spelling)."""
        from urllib.parse import quote

        q = f"ssl_cert_reqs=required&ssl_ca_certs={quote(self.certs.ca, safe='/')}"
        if self.requires_client_cert:
            q += (f"&ssl_certfile={quote(self.certs.client_cert, safe='/')}"
                  f"&ssl_keyfile={quote(self.certs.client_key, safe='/')}")
        return q

    def summary(self) -> dict[str, str | bool]:
        return {"ca": self.certs.ca, "client_cert": self.certs.client_cert,
                "client_key": self.certs.client_key, "client_certs": self.client_certs,
                "dir": self.certs.dir}

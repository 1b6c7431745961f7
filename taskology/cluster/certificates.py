"""TLS for the cluster: the certificate files of one party, the Dask ``Security`` built from them, and why a
connection was refused, in words.

A scheduler with TLS refuses plaintext, certificates of another CA and expired certificates, from clients and
workers alike; what reaches the refused client varies with timing (an alert naming the reason, or only a closed
connection), so :func:`certificate_problem` judges this party's own certificate against its CA file, offline,
and :func:`tls_failure_message` turns a failed connection into one line.

Example:
    >>> tls = TLSFiles(Path("ca.pem"), Path("client.pem"), Path("client.key"))
    >>> certificate_problem(tls)  # doctest: +SKIP
    'certificate has expired'
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from distributed.security import Security

from taskology.errors import ClusterError


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for mutual TLS: the CA that signed every party, and this party's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def tls_security(tls: TLSFiles) -> Security:
    """Mutual-TLS :class:`~distributed.security.Security` requiring encryption (plaintext is refused)."""
    for what, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not Path(path).is_file():
            raise ClusterError(f"cluster.tls.{what}: expected a PEM file, found nothing at {path}")
    return Security(require_encryption=True, tls_ca_file=str(tls.ca_file),
                    tls_client_cert=str(tls.cert_file), tls_client_key=str(tls.key_file),
                    tls_scheduler_cert=str(tls.cert_file), tls_scheduler_key=str(tls.key_file),
                    tls_worker_cert=str(tls.cert_file), tls_worker_key=str(tls.key_file))


def certificate_problem(tls: TLSFiles) -> str | None:
    """Why a party that trusts ``tls.ca_file`` would refuse ``tls.cert_file`` (a scheduler checking this
    client, or a peer checking this worker), or ``None`` when it would accept it.

    The check is a TLS handshake in memory (no network) between a server that requires a client
    certificate signed by ``ca_file`` and a client presenting ``cert_file``: OpenSSL's own verdict, such
    as ``certificate has expired`` or ``unable to get local issuer certificate`` (not signed by that CA).
    """
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(str(tls.cert_file), str(tls.key_file))  # any certificate serves this side
        server.load_verify_locations(str(tls.ca_file))
        server.verify_mode = ssl.CERT_REQUIRED
        server.verify_flags &= ~ssl.VERIFY_X509_STRICT  # as Dask's contexts
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE  # only the client's certificate is judged here
        client.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        return f"unreadable certificate or key: {exc.strerror or exc}"
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    sides = {"client": client.wrap_bio(client_in, client_out, server_side=False),
             "server": server.wrap_bio(server_in, server_out, server_side=True)}
    for _round in range(8):  # a TLS 1.3 handshake takes three
        for name, side in list(sides.items()):
            try:
                side.do_handshake()
                del sides[name]
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                return str(exc.verify_message)
            except ssl.SSLError as exc:
                return str(exc.reason or exc).replace("_", " ").lower()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if not sides:
            return None
    return None


def _ssl_errors(exc: BaseException) -> list[BaseException]:
    """The ssl errors in ``exc``'s chain of causes, outermost first."""
    found, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLError):
            found.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return found


def tls_failure_message(exc: BaseException, tls: TLSFiles) -> str | None:
    """What went wrong when a TLS connection to the scheduler failed with ``exc``, in words, or ``None``
    when the failure is not about certificates.

    The scheduler's refusal reaches this client in several forms (an alert naming the reason, or only a
    closed connection, depending on timing), so this client's certificate is judged here as well
    (:func:`certificate_problem`); a scheduler certificate this client does not trust shows in the
    chain as a verification error."""
    errors = _ssl_errors(exc)
    for error in errors:
        if isinstance(error, ssl.SSLCertVerificationError):
            return (f"the scheduler's certificate is not trusted by cluster.tls.ca_file {tls.ca_file} "
                    f"({error.verify_message})")
    text = " ".join(str(e) for e in (exc, *errors)).lower()
    if not errors and "tls" not in text and "ssl" not in text:
        return None
    problem = certificate_problem(tls)
    if problem is not None:
        cert = f"this client's certificate (cluster.tls.cert_file {tls.cert_file})"
        if "expired" in problem:
            return f"{cert} has expired, so the scheduler refuses it (OpenSSL: {problem})"
        if any(k in problem for k in ("issuer", "self-signed", "self signed", "unknown ca")):
            return (f"{cert} is not trusted: it is not signed by the CA of cluster.tls.ca_file {tls.ca_file} "
                    f"(OpenSSL: {problem})")
        return f"{cert} is refused: {problem}"
    if "expired" in text:
        return "the scheduler refused this client's certificate: certificate expired"
    if "unknown ca" in text or "unknown_ca" in text:
        return "the scheduler refused this client's certificate: not trusted (signed by a CA it does not know)"
    return None

"""TLS diagnosis without a network: a certificate judged against a CA file by an in-memory handshake, and a
failed connection turned into one line that names the problem."""
from __future__ import annotations

import ssl
from pathlib import Path

from certificate_files import make_ca, make_signed, needs_openssl
from taskology.cluster.certificates import TLSFiles, certificate_problem, tls_failure_message


@needs_openssl
def test_certificate_problem_names_expiry_and_a_foreign_ca_without_network(tmp_path: Path) -> None:
    ca, other_ca = make_ca(tmp_path, "ca"), make_ca(tmp_path, "other-ca")
    good = make_signed(tmp_path, ca, "good")
    assert certificate_problem(good) is None
    assert certificate_problem(make_signed(tmp_path, ca, "old", expired=True)) == "certificate has expired"
    foreign = make_signed(tmp_path, other_ca, "foreign")
    assert certificate_problem(TLSFiles(ca[0], foreign.cert_file, foreign.key_file)) == \
        "unable to get local issuer certificate"
    mismatched = certificate_problem(TLSFiles(ca[0], good.cert_file, foreign.key_file))
    assert mismatched is not None and mismatched.startswith("unreadable certificate or key")
    assert "KEY_VALUES_MISMATCH" in mismatched


def _chain(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@needs_openssl
def test_a_refused_connection_is_named_by_the_certificate_at_fault(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    good, expired = make_signed(tmp_path, ca, "good"), make_signed(tmp_path, ca, "expired", expired=True)
    # the scheduler only closed the connection (as it often does): this client's own certificate is judged
    eof = _chain(OSError("in <TLS (closed) local=tls://127.0.0.1:1>: SSLEOFError: EOF occurred"),
                 ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    message = tls_failure_message(eof, expired)
    assert message == (f"this client's certificate (cluster.tls.cert_file {expired.cert_file}) has expired, so the "
                       "scheduler refuses it (OpenSSL: certificate has expired)")
    # this client does not trust the scheduler's certificate: said as such, whatever its own certificate
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate in certificate chain"
    assert tls_failure_message(_chain(OSError("TLS certificate does not match"), verify), good) == (
        f"the scheduler's certificate is not trusted by cluster.tls.ca_file {good.ca_file} "
        "(self-signed certificate in certificate chain)")
    # not about certificates: no verdict, the caller keeps the connection error
    assert tls_failure_message(OSError("Timed out trying to connect to tcp://127.0.0.1:1 after 3 s"), good) is None
    assert tls_failure_message(eof, good) is None  # a good certificate, an unexplained refusal

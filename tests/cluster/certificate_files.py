"""Certificates for TLS tests, made with the ``openssl`` command line: a CA, and certificates for 127.0.0.1
signed by it (valid for two days, or expired). ``needs_openssl`` skips a test where the command is missing."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from taskology.cluster.certificates import TLSFiles

OPENSSL = next((p for p in ("/usr/bin/openssl", "/bin/openssl") if os.path.exists(p)), None)
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl CLI")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([str(OPENSSL), *args], check=True, capture_output=True, timeout=60, cwd=cwd)


def make_ca(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A CA certificate and key (openssl CLI): ``(name.pem, name.key)``."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tmp_path)
    return tmp_path / f"{name}.pem", tmp_path / f"{name}.key"


def make_signed(tmp_path: Path, ca: tuple[Path, Path], name: str, expired: bool = False) -> TLSFiles:
    """A certificate for 127.0.0.1 signed by ``ca``; ``expired``: valid only on 2020-01-01 (``openssl ca``
    sets past dates, ``openssl x509`` cannot). The returned files trust ``ca``."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1", cwd=tmp_path)
    if expired:
        db = tmp_path / f"{name}-db"
        db.mkdir()
        (db / "index.txt").write_text("")
        (db / "serial").write_text("1000\n")
        (tmp_path / f"{name}.cnf").write_text(
            f"[ca]\ndefault_ca = c\n[c]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\n"
            "default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n")
        _openssl("ca", "-batch", "-config", f"{name}.cnf", "-cert", str(ca[0]), "-keyfile", str(ca[1]), "-in",
                 f"{name}.csr", "-out", f"{name}.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                 "-notext", cwd=tmp_path)
    else:
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial",
                 str(int.from_bytes(name.encode()[:6], "big")), "-days", "2", "-copy_extensions", "copy",
                 "-out", f"{name}.pem", cwd=tmp_path)
    return TLSFiles(ca[0], tmp_path / f"{name}.pem", tmp_path / f"{name}.key")

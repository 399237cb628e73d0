#!/usr/bin/env python3
"""make_csrs.py OUT N SPIFFE_ID - N P-256 CSRs (PEM, back to back) with one URI SAN, made once
before the network benchmark so both CAs sign exactly the same requests."""
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

out, n, sid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "wb") as f:
    for i in range(n):
        k = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-%d" % i)]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(sid)]),
                              critical=False)
               .sign(k, hashes.SHA256()))
        f.write(csr.public_bytes(serialization.Encoding.PEM))

"""The fingerprints Scaleway publishes, read as asyncssh writes them, and matched against host keys."""

from __future__ import annotations

import asyncssh
import pytest

from inventiv.deploy.remote import key_matches, parse_fingerprints

SHA = "SHA256:" + "A" * 43


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"256 {SHA} root@vm (ED25519)\n", {SHA}),
        (f"3072 {SHA} root@vm (RSA)\n256 {SHA[:-1]}B root@vm (ECDSA)", {SHA, SHA[:-1] + "B"}),
        ("2048 MD5:AA:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99 root@vm (RSA)",
         {"MD5:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"}),
        ("2048 aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99 root@vm (RSA)",
         {"MD5:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"}),
        ("no keys yet", set()),
        ("SHA256:tooshort", set()),
    ],
)
def test_parse_fingerprints(text: str, expected: set[str]) -> None:
    assert parse_fingerprints(text) == expected


def test_key_matches_by_sha256_or_md5() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    published = parse_fingerprints(f"256 {key.get_fingerprint('sha256')} root@vm (ED25519)")
    assert key_matches(key, published) and not key_matches(other, published)
    assert key_matches(key, parse_fingerprints(key.get_fingerprint("md5")))

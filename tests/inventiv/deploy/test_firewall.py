"""The VM's security group rules: 80 and 443 from anywhere, SSH only from the allowed networks."""

from __future__ import annotations

from inventiv.deploy.firewall import desired_rules


def _opened(rules: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(rule["ip_range"], rule["dest_port_from"]) for rule in rules]


def test_only_http_https_and_restricted_ssh() -> None:
    rules = desired_rules(("198.51.100.0/24", "2001:db8::/32"), 22)
    assert _opened(rules) == [
        ("0.0.0.0/0", 80), ("::/0", 80), ("0.0.0.0/0", 443), ("::/0", 443),
        ("198.51.100.0/24", 22), ("2001:db8::/32", 22),
    ]  # fmt: skip
    assert {(r["action"], r["protocol"], r["direction"], r["editable"]) for r in rules} == {
        ("accept", "TCP", "inbound", True)
    }
    assert [r["position"] for r in rules] == list(range(1, 7))


def test_ssh_on_its_configured_port() -> None:
    assert _opened(desired_rules(("203.0.113.7/32",), 2222))[-1] == ("203.0.113.7/32", 2222)

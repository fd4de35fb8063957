"""`relay domain ...`: the real command against a real database and a real DNS server."""

from __future__ import annotations

import json

from relay.dkim import keys
from tests.conftest import KEY_SECRET
from tests.dns_server import zone_server
from tests.test_cli import assert_one_line_error, run


async def test_add_prints_records_then_verify_against_dns(db_dsn, store) -> None:
    await run(db_dsn, "account", "create", "acme")
    env = {"RELAY_DKIM_SPF_INCLUDE": "_spf.upstream.test"}
    code, out, err = await run(db_dsn, "domain", "add", "acme", "Example.com", "--selector", "s1", "--ed25519",
                               env=env)
    assert code == 0, err
    zone = "\n".join(line for line in out.splitlines() if " IN " in line)  # the copy-paste part
    assert 's1._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=rsa; p=' in zone
    assert 's1e._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; p=' in zone
    assert 'example.com. 3600 IN TXT "v=spf1 include:_spf.upstream.test ~all"' in zone
    assert '_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=none; adkim=r; aspf=r"' in zone
    assert "relay domain verify example.com" in out
    sealed = await store.sealed_key("example.com", "s1")
    assert sealed.hex() not in out and b"PRIVATE" not in out.encode()

    with zone_server() as dns:
        env |= {"RELAY_DNS_NAMESERVERS": dns.nameserver, "RELAY_DNS_TIMEOUT_SECONDS": "2"}
        dns.publish("")
        code, out, _ = await run(db_dsn, "domain", "verify", "example.com", "--json", env=env)
        assert code == 0 and json.loads(out)["status"] == "pending" and not json.loads(out)["signing"]
        dns.publish(zone)
        code, out, _ = await run(db_dsn, "domain", "verify", "example.com", env=env)
        assert code == 0 and "example.com (account 1): verified, signing" in out, out
        assert out.count("ok   dkim") == 2 and "ok   spf" in out and "ok   dmarc" in out

    # the sealed key opens with the server secret and is the one published
    domain = await store.find_domain("example.com")
    opened = keys.Vault(KEY_SECRET).open(await store.sealed_key("example.com", "s1"), "example.com", "s1")
    assert keys.public_value(opened) == domain.keys[0].public_key


async def test_list_show_rotate_remove_json(db_dsn, store) -> None:
    await run(db_dsn, "account", "create", "acme")
    await run(db_dsn, "account", "create", "other")
    code, out, _ = await run(db_dsn, "domain", "add", "acme", "example.com", "--trust", "--json")
    added = json.loads(out)
    assert code == 0 and added["trusted"] and added["signing"] and added["status"] == "pending"
    assert {r["purpose"] for r in added["records"]} == {"dkim", "dmarc"}
    assert all("private" not in k for k in added["keys"][0])
    selector = added["keys"][0]["selector"]
    assert selector.startswith("relay") and len(selector) == len("relay") + 8

    code, out, _ = await run(db_dsn, "domain", "rotate", "example.com", "--json")
    rotated = json.loads(out)
    assert [(k["selector"] == selector, k["active"]) for k in rotated["keys"]] == [(True, True), (False, False)]
    new = rotated["keys"][1]["selector"]
    assert new == f"{selector}-2"
    code, _, err = await run(db_dsn, "domain", "remove", "example.com", "--selector", selector)
    assert_one_line_error(code, err, "rotate first")
    await store.record_check("example.com", new, True, "ok")  # as verify does once the record is seen
    await run(db_dsn, "domain", "remove", "example.com", "--selector", selector)
    code, out, _ = await run(db_dsn, "domain", "show", "example.com", "--json")
    assert [(k["selector"], k["active"]) for k in json.loads(out)["keys"]] == [(new, True)]

    code, out, _ = await run(db_dsn, "domain", "rotate", "example.com", "--selector", "now1", "--now", "--json")
    assert [(k["selector"], k["active"]) for k in json.loads(out)["keys"]] == [(new, False), ("now1", True)]

    code, out, _ = await run(db_dsn, "domain", "list", "--account", "other", "--json")
    assert json.loads(out) == []
    code, out, _ = await run(db_dsn, "domain", "list", "--json")
    assert [d["domain"] for d in json.loads(out)] == ["example.com"]
    code, _, err = await run(db_dsn, "domain", "add", "other", "example.com")
    assert_one_line_error(code, err, "already a sending domain")
    code, out, _ = await run(db_dsn, "domain", "remove", "example.com", "--json")
    assert json.loads(out) == {"domain": "example.com", "removed": True}
    code, _, err = await run(db_dsn, "domain", "show", "example.com")
    assert_one_line_error(code, err, "no sending domain example.com")


async def test_bad_input_is_one_line(db_dsn, store) -> None:
    await run(db_dsn, "account", "create", "acme")
    for args, expected in ((("add", "acme", "not a domain"), "not a domain name"),
                           (("add", "acme", "example.com", "--selector", "a b"), "not a DKIM selector"),
                           (("add", "nobody", "example.com"), "no account"),
                           (("verify", "missing.test"), "no sending domain")):
        code, _, err = await run(db_dsn, "domain", *args)
        assert_one_line_error(code, err, expected)


async def test_verify_without_dns_answer_is_one_line(db_dsn, store) -> None:
    import socket
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        await run(db_dsn, "account", "create", "acme")
        await run(db_dsn, "domain", "add", "acme", "example.com")
        env = {"RELAY_DNS_NAMESERVERS": f"127.0.0.1:{silent.getsockname()[1]}", "RELAY_DNS_TIMEOUT_SECONDS": "0.5"}
        code, _, err = await run(db_dsn, "domain", "verify", "example.com", env=env)
        assert_one_line_error(code, err, "no DNS answer")
    finally:
        silent.close()

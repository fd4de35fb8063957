"""Configuration: defaults, the example file, environment overrides, and one-line errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from relay.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_example_documents_every_key_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    defaults = Config()
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    for section, values in data.items():
        expected = dataclasses.asdict(getattr(defaults, section))
        as_toml = {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}  # lists are tuples
        assert values == as_toml, section


def test_example_loads() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[smtp]\nlisten = "127.0.0.1:2525"\n[limits]\ncalls_per_minute = 5\n')
    cfg = load_config(path, env={"RELAY_LIMITS_CALLS_PER_MINUTE": "7",
                                 "RELAY_SMTP_ALLOW_PLAINTEXT_AUTH": "true",
                                 "RELAY_DATABASE_URL": "postgresql://u@h/db"})
    assert cfg.smtp.listen == "127.0.0.1:2525"
    assert cfg.limits.calls_per_minute == 7
    assert cfg.smtp.allow_plaintext_auth is True
    assert cfg.database.url == "postgresql://u@h/db"


def test_relay_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[smtp]\nhostname = "mx.test"\n')
    assert load_config(None, env={"RELAY_CONFIG": str(path)}).smtp.hostname == "mx.test"


@pytest.mark.parametrize(("text", "env", "message"), [
    ("[smtp]\nlisen = \"x\"\n", {}, "unknown config key smtp.lisen"),
    ("[smpt]\n", {}, "unknown config section [smpt]"),
    ("[limits]\ncalls_per_minute = \"lots\"\n", {}, "limits.calls_per_minute: expected a whole number"),
    ("[limits]\ncalls_per_minute = 0\n", {}, "limits.calls_per_minute: must be greater than 0"),
    ("[http]\nbody_timeout_seconds = 0\n", {}, "http.body_timeout_seconds: must be greater than 0"),
    ("[smtp]\ndata_timeout_seconds = -1\n", {}, "smtp.data_timeout_seconds: must be greater than 0"),
    ("", {"RELAY_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "-2"}, "http.max_connections_per_address: must be 0"),
    ("[smtp]\nlisten = \"nowhere\"\n", {}, "smtp.listen: expected host:port"),
    ("[upstream]\nurl = \"http://x\"\n", {}, "upstream.url: scheme must be one of"),
    ("[smtp]\nallow_plaintext_auth = \"yes\"\n", {}, "smtp.allow_plaintext_auth: expected true or false"),
    ("", {"RELAY_LIMITS_MAX_RECIPIENTS": "many"}, "limits.max_recipients (from RELAY_LIMITS_MAX_RECIPIENTS)"),
    ("", {"RELAY_SMTP_NOPE": "1"}, "unknown config key smtp.nope (from RELAY_SMTP_NOPE)"),
    ("[smtp]\nimplicit_tls_listen = \"0.0.0.0:465\"\n", {}, "smtp.implicit_tls_listen: needs"),
    ("not toml [", {}, "config file"),
    ("[server]\nrecovery_after_seconds = 60\n", {},
     "server.recovery_after_seconds: must be at least upstream.timeout_seconds + 60 (90), got 60"),
    ("[upstream]\ntimeout_seconds = 300\n", {},
     "server.recovery_after_seconds: must be at least upstream.timeout_seconds + 60 (360), got 300"),
    ("[webhooks]\nlease_seconds = 10\n", {},
     "webhooks.lease_seconds: must be at least webhooks.timeout_seconds + 5 (20), got 10"),
    ("[webhooks]\ntimeout_seconds = 58\n", {},
     "webhooks.lease_seconds: must be at least webhooks.timeout_seconds + 5 (63), got 60"),
    ("", {"RELAY_WEBHOOKS_LEASE_SECONDS": "2"}, "webhooks.lease_seconds: must be at least webhooks.timeout_seconds"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                               message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/relay.toml", env={})


def test_unrelated_environment_is_ignored() -> None:
    assert load_config(None, env={"RELAY_TEST_DSN": "x", "RELAYX": "y"}) == Config()


def test_list_keys_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[dns]\nnameservers = ["192.0.2.53", "[2001:db8::1]:5353"]\n')
    assert load_config(path, env={}).dns.nameservers == ("192.0.2.53", "[2001:db8::1]:5353")
    env = {"RELAY_DNS_NAMESERVERS": "192.0.2.1:53, 192.0.2.2"}
    assert load_config(path, env=env).dns.nameservers == ("192.0.2.1:53", "192.0.2.2")
    path.write_text('[dns]\nnameservers = "192.0.2.53"\n')
    with pytest.raises(ConfigError, match=r"dns\.nameservers: expected a list of strings"):
        load_config(path, env={})
    path.write_text('[dns]\nnameservers = ["ns.example.net"]\n')
    with pytest.raises(ConfigError, match=r"dns\.nameservers: expected an IP address"):
        load_config(path, env={})

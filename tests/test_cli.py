"""The command line: keys are printed once, `magistral chat` streams an answer from a server."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Server, cli


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    created = cli("keys", "create", "--name", "ci-key", "--database-url", url)
    secret = created.stdout.strip()
    assert secret.startswith("mg-") and "\n" not in secret and "not shown again" in created.stderr
    listing = cli("keys", "list", "--database-url", url).stdout
    assert "ci-key" in listing and "active" in listing and secret not in listing
    assert cli("keys", "revoke", "1", "--database-url", url).returncode == 0
    assert "revoked" in cli("keys", "list", "--database-url", url).stdout
    assert cli("keys", "revoke", "42", "--database-url", url, check=False).returncode == 1


def test_chat_streams_an_answer(server: Server) -> None:
    result = cli("chat", "What is the capital of France? Answer in one word.", "--base-url",
                 server.base_url, "--api-key", server.key, "--temperature", "0", "--max-tokens", "20")
    assert "Paris" in result.stdout


def test_chat_reports_a_bad_key(server: Server) -> None:
    result = cli("chat", "hi", "--base-url", server.base_url, "--api-key", "mg-wrong", check=False)
    assert result.returncode == 1 and "401" in result.stderr


def test_key_options_are_checked_without_tracebacks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    for option, says in ((["--expires", "99999999d"], "more than 100 years"),
                         (["--expires", "2001-01-01"], "in the past"),
                         (["--expires", "soon"], "not '30d'"),
                         (["--rpm", "-1"], "at least 1"), (["--tpm", "0"], "at least 1")):
        result = cli("keys", "create", "--name", "k", "--database-url", url, *option, check=False)
        assert result.returncode in (1, 2) and says in result.stderr and "Traceback" not in result.stderr
    missing = cli("keys", "create", "--name", "k", "--database-url", f"sqlite:///{tmp_path}/no/such/m.db",
                  check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_sqlite_database_is_private_to_its_owner(tmp_path: Path) -> None:
    cli("keys", "create", "--name", "k", "--database-url", f"sqlite:///{tmp_path / 'm.db'}")
    for part in tmp_path.glob("m.db*"):
        assert part.stat().st_mode & 0o777 == 0o600, part


def test_database_url_from_a_file_keeps_it_out_of_the_process_list(tmp_path: Path) -> None:
    url_file = tmp_path / "db-url"
    url_file.write_text(f"sqlite:///{tmp_path / 'm.db'}\n")
    created = cli("keys", "create", "--name", "k", "--database-url", f"@{url_file}")
    assert created.stdout.startswith("mg-") and (tmp_path / "m.db").exists()
    typed = cli("keys", "list", "--database-url", "postgresql://u:s3cret@127.0.0.1:1/x", check=False)
    assert "visible to every local user" in typed.stderr and "s3cret" not in typed.stderr


def test_a_bad_chat_template_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}")
    for path, says in ((broken, "not a valid Jinja template"), (tmp_path / "none.jinja", "cannot read")):
        result = cli("serve", "--chat-template", str(path), "--database-url", f"sqlite:///{tmp_path}/m.db",
                     check=False)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr

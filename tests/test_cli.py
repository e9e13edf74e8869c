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

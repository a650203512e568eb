"""`omnifuse serve`: its options reach uvicorn and the app; bad arguments are one line."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi.testclient import TestClient

from omnifuse.cli import cli


def test_serve_runs_uvicorn_on_loopback_with_the_token_from_the_environment(
    aligned_model, image_index, monkeypatch
):
    ran = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: ran.update(app=app, **options))
    result = CliRunner().invoke(
        cli,
        ["serve", str(aligned_model), "--index", str(image_index), "--threads", "1"],
        env={"OMNIFUSE_TOKEN": "from-env"},
    )
    assert result.exit_code == 0, result.output
    assert (ran["host"], ran["port"]) == ("127.0.0.1", 8000)
    client = TestClient(ran["app"])
    assert client.get("/health").status_code == 200
    assert client.get("/info").status_code == 401
    assert client.get("/info", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_serve_warns_when_it_binds_beyond_loopback_without_a_token(
    aligned_model, image_index, monkeypatch
):
    monkeypatch.setattr("uvicorn.run", lambda app, **options: None)
    arguments = ["serve", str(aligned_model), "--index", str(image_index), "--host", "0.0.0.0"]
    result = CliRunner().invoke(cli, arguments, env={"OMNIFUSE_TOKEN": None})
    assert result.exit_code == 0 and "without a token" in result.output


def test_serve_refuses_a_missing_index_in_one_line(aligned_model, tmp_path):
    result = CliRunner().invoke(cli, ["serve", str(aligned_model), "--index", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "no such folder" in result.output

from typer.testing import CliRunner

from rayprism.cli import app

runner = CliRunner()


def test_help_lists_commands_and_explains_them():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output and "OpenAI-compatible" in result.output


def test_serve_help_documents_defaults():
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for fragment in ("--host", "--port", "--address", "127.0.0.1", "8000"):
        assert fragment in result.output


def test_a_bad_config_fails_before_ray_starts(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("server:\n  port: -1\n")
    result = runner.invoke(app, ["serve", str(path)])
    assert result.exit_code == 2
    assert "server.port" in result.output and "-1" in result.output


def test_an_uninstalled_model_package_fails_before_ray_starts(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("models:\n  - source: package:not_installed_pkg/model\n")
    result = runner.invoke(app, ["serve", str(path)])
    assert result.exit_code == 2
    assert "pip install not-installed-pkg" in result.output


def test_alias_commands_are_listed_with_their_help():
    result = runner.invoke(app, ["alias", "--help"])
    assert result.exit_code == 0
    for command in ("set", "list", "rm"):
        assert command in result.output
    assert "atomic" in result.output


def test_reembed_rollback_and_status_explain_themselves():
    listed = runner.invoke(app, ["--help"])
    for command in ("reembed", "reembed-status", "rollback"):
        assert command in listed.output
    reembed = runner.invoke(app, ["reembed", "--help"])
    assert reembed.exit_code == 0
    for fragment in ("--model", "--queries", "--min-score", "--batch-size", "--no-wait", "alias", "rollback"):
        assert fragment in reembed.output, fragment
    rollback = runner.invoke(app, ["rollback", "--help"])
    assert rollback.exit_code == 0 and "replayed" in rollback.output and "--no-wait" in rollback.output
    assert "--batch-size" in rollback.output
    status = runner.invoke(app, ["reembed-status", "--help"])
    assert status.exit_code == 0 and "JSON" in status.output and "job_id" in status.output


def test_reembed_needs_a_model():
    result = runner.invoke(app, ["reembed", "docs_live"])
    assert result.exit_code == 2 and "--model" in result.output

"""What a run's process inherits from its agent (an allowlist, never a credential), how the
agent keeps its own token out of reach, and which kernel a notebook runs on."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from reprolab_agent.environment import NoKernel, capture, choose_kernel, run_environment

ROOT = Path(__file__).resolve().parents[2]

AGENT_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_CTYPE": "C.UTF-8",
    "TZ": "UTC",
    "OMP_NUM_THREADS": "2",
    "PYTHONHASHSEED": "0",
    "CUDA_VISIBLE_DEVICES": "0",
    "HOME": "/home/agent",
    "PYTHONPATH": "/srv/site",
    "REPROLAB_NODE_TOKEN": "rln_node_secret",
    "REPROLAB_NODE_TOKEN_FILE": "/etc/reprolab/token",
    "REPROLAB_SERVER": "https://lab.example.org",
    "DJANGO_SECRET_KEY": "django-secret",
    "DJANGO_SETTINGS_MODULE": "config.settings.local",
    "DATABASE_URL": "postgres://site:pw@db/site",
    "REDIS_URL": "redis://:pw@cache:6379/0",
    "AWS_ACCESS_KEY_ID": "AKIA...",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "GITHUB_TOKEN": "ghp_secret",
    "PGPASSWORD": "pg-secret",
    "EMAIL_URL": "smtp+tls://user:pw@mail:587",
    "MY_SERVICE_SECRET_KEY": "secret",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
}


def test_a_runs_environment_holds_no_credential_of_the_agent_or_the_site(tmp_path):
    env = run_environment(AGENT_ENVIRONMENT, workdir=tmp_path, pythonpath="/opt/agent")
    leaked = {k for k, v in env.items() if "secret" in v.lower() or "pw@" in v or k.startswith(("REPROLAB", "DJANGO"))}
    assert not leaked
    for name in ("DATABASE_URL", "REDIS_URL", "AWS_ACCESS_KEY_ID", "EMAIL_URL", "SSH_AUTH_SOCK"):
        assert name not in env


def test_a_runs_environment_keeps_what_changes_results_and_locates_software(tmp_path):
    env = run_environment(AGENT_ENVIRONMENT, workdir=tmp_path, pythonpath="/opt/agent")
    for name in ("PATH", "LANG", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES"):
        assert env[name] == AGENT_ENVIRONMENT[name]


def test_a_runs_home_and_temporary_folder_are_in_its_working_directory(tmp_path):
    env = run_environment(AGENT_ENVIRONMENT, workdir=tmp_path, pythonpath="/opt/agent")
    assert env["HOME"] == str(tmp_path)
    assert env["TMPDIR"] == str(tmp_path / ".tmp")
    assert env["PYTHONPATH"] == "/opt/agent"  # the agent package only, not the agent's own path


def test_the_snapshot_records_the_runs_environment_not_the_agents(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    env = run_environment({**AGENT_ENVIRONMENT, "OMP_NUM_THREADS": "2"}, workdir=tmp_path, pythonpath="/opt/agent")
    snapshot = capture(kernel_name="python3", kernel_chosen="default", inputs=[], env=env)
    assert snapshot["env"]["OMP_NUM_THREADS"] == "2"
    assert "HOME" not in snapshot["env"]
    assert snapshot["kernel"]["name"] == "python3"
    assert snapshot["kernel"]["chosen"] == "default"


# --- the agent's token ---------------------------------------------------------------------------
TAKE = """
import os, sys
from pathlib import Path
from reprolab_agent.cli import take_token
file = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "-" else None
token = take_token(None if sys.argv[1] == "-" else sys.argv[1], file)
environ = open("/proc/self/environ", "rb").read()
cmdline = open("/proc/self/cmdline", "rb").read()
needle = token.encode()  # (not b"rln_": this script's own text is on the command line)
print(token, needle in environ, needle in cmdline, "REPROLAB_NODE_TOKEN" in os.environ)
"""


def take(*args: str, env: dict[str, str] | None = None) -> list[str]:
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "agent"), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", TAKE, *args], env=environment, capture_output=True, text=True, check=True
    ).stdout
    return out.split()


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="Linux /proc")
def test_a_token_from_the_environment_leaves_it_and_the_processes_proc_environ():
    assert take("-", env={"REPROLAB_NODE_TOKEN": "rln_from_env"}) == ["rln_from_env", "False", "False", "False"]


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="Linux /proc")
def test_a_token_on_the_command_line_is_wiped_from_the_processes_proc_cmdline():
    assert take("rln_on_argv") == ["rln_on_argv", "False", "False", "False"]


def test_a_token_is_read_from_a_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("rln_in_a_file\n")
    assert take("-", str(secret))[0] == "rln_in_a_file"


# --- the kernel a notebook runs on ---------------------------------------------------------------
def test_a_notebook_from_new_notebook_runs_on_python3_by_default():
    choice = choose_kernel(nbformat.v4.new_notebook().metadata)
    assert (choice.name, choice.language, choice.chosen) == ("python3", "python", "default")
    assert "chosen by default" in choice.describe()


def test_an_upgraded_v3_notebook_runs_on_python3_by_default():
    v3 = nbformat.v3.new_notebook(worksheets=[nbformat.v3.new_worksheet(cells=[nbformat.v3.new_code_cell("1")])])
    upgraded = nbformat.reads(nbformat.v3.writes_json(v3), as_version=4)
    assert choose_kernel(upgraded.metadata).chosen == "default"
    assert choose_kernel(upgraded.metadata).name == "python3"


def test_a_vs_code_notebook_with_only_language_info_runs_on_its_languages_kernel():
    vscode = {"language_info": {"name": "python", "version": "3.11.7"}}
    choice = choose_kernel(vscode)
    assert (choice.name, choice.chosen) == ("python3", "default")


def test_a_notebook_in_another_language_runs_on_an_installed_kernel_for_it():
    r_notebook = {"language_info": {"name": "R"}}
    choice = choose_kernel(r_notebook, installed={"python3": "python", "ir": "r"})
    assert (choice.name, choice.chosen) == ("ir", "default")
    with pytest.raises(NoKernel, match="none for r"):
        choose_kernel(r_notebook, installed={"python3": "python"})


def test_a_declared_kernelspec_is_the_notebooks_choice():
    metadata = {"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}}
    choice = choose_kernel(metadata)
    assert (choice.name, choice.language, choice.chosen) == ("ir", None, "notebook")


def test_the_nodes_kernel_setting_wins():
    metadata = {"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}}
    assert choose_kernel(metadata, override="python3").chosen == "node"


def test_a_malformed_kernelspec_counts_as_none():
    assert choose_kernel({"kernelspec": "python3"}).name == "python3"

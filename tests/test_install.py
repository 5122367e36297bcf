"""Installing mailwarden: the base package needs no C compiler; LDAP is the extra ``ldap``.

Two lanes. The slow one does what a new user does: a fresh venv, ``pip install`` of the project
with every dependency taken as a binary wheel and no compiler on PATH, then the installed
``mailwarden`` command; that venv has no LDAP client, so it also shows what an LDAP site gets
there. The fast one runs the project's own ``mailwarden`` in a subprocess whose import system
refuses ``bonsai`` (``sys.modules["bonsai"] = None``, Python's own way to block an import), so
every command that must refuse an LDAP site is checked on each run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailwarden import __version__
from tests.fixtures.net import free_port
from tests.fixtures.paths import EXAMPLES, ROOT

_SERVICES = """
[organisation]
name = "Install Test"
short_name = "Test"

[[services.campus.imap]]
host = "imap.example.edu"
tls = "implicit"

[[services.campus.smtp]]
host = "smtp.example.edu"
tls = "starttls"
"""

LDAP_SITE = f"""
primary_domain = "example.edu"

[directory]
backend = "ldap"
servers = ["ldap://127.0.0.1:9"]
base_dn = "ou=people,dc=example,dc=edu"
{_SERVICES}
[domains."example.edu"]
services = "campus"
login = "directory"
"""
"""A site whose directory is LDAP (the server is never contacted: the refusal comes first)."""

GUARD_SITE = f"""
primary_domain = "example.edu"

[directory]
path = "users.sqlite"
{_SERVICES}
[domains."example.edu"]
services = "campus"

[guard]
local_domains = ["example.edu"]

[guard.lock]
method = "ldap"
ldap_uri = "ldap://127.0.0.1:9"
user_dn_template = "uid={{user}},ou=people,dc=example,dc=edu"
"""
"""An embedded directory, but a guard that locks accounts in LDAP."""

BLOCK_BONSAI = (
    "import sys; sys.modules['bonsai'] = None; "
    "from mailwarden.cli import main; sys.exit(main(sys.argv[1:]))"
)
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "tcc")
TIMEOUT = 60.0


@pytest.fixture
def sites(tmp_path: Path) -> Path:
    (tmp_path / "ldap.toml").write_text(LDAP_SITE, encoding="utf-8")
    (tmp_path / "guard.toml").write_text(GUARD_SITE, encoding="utf-8")
    return tmp_path


def refusals() -> list[object]:
    """(site file, arguments, the setting the error must name) for every command that must
    refuse at start; ``{port}`` is a free port, in case a command wrongly went on to serve."""
    directory = 'directory.backend = "ldap"'
    lock = 'guard.lock.method = "ldap"'
    cases = [
        ("ldap.toml", ["check-config", "ldap.toml"], directory),
        ("ldap.toml", ["serve", "-c", "ldap.toml", "--listen", "127.0.0.1:{port}"], directory),
        ("ldap.toml", ["directory", "-c", "ldap.toml", "check", "jane@example.edu"], directory),
        ("guard.toml", ["check-config", "guard.toml"], lock),
        (
            "guard.toml",
            ["guard", "-c", "guard.toml", "serve", "--policy", "127.0.0.1:{port}"],
            lock,
        ),
    ]
    return [
        pytest.param(site, args, setting, id=f"{site}-{args[0]}") for site, args, setting in cases
    ]


def _args(args: list[str]) -> list[str]:
    port = str(free_port())
    return [a.replace("{port}", port) for a in args]


def assert_refused(result: subprocess.CompletedProcess[str], setting: str) -> None:
    """Exit 2 with one ``mailwarden: error [LDAP-CLIENT-MISSING]`` line that says what to do."""
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err, err
    assert err.startswith("mailwarden: error [LDAP-CLIENT-MISSING]: "), err
    assert setting in err, err
    assert "pip install 'mailwarden[ldap]'" in err, err
    for package in ("libldap2-dev", "libsasl2-dev", "build-essential"):
        assert package in err, err
    assert len(err.strip().splitlines()) == 1, err


# -- the fast lane: the project's venv, bonsai blocked ----------------------------------------


def run_without_bonsai(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_BONSAI, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


@pytest.mark.parametrize(("site", "args", "setting"), refusals())
def test_ldap_site_refused_at_start_without_the_client(
    sites: Path, site: str, args: list[str], setting: str
) -> None:
    assert_refused(run_without_bonsai(_args(args), sites), setting)


def test_check_config_json_reports_the_missing_client(sites: Path) -> None:
    result = run_without_bonsai(["check-config", "--format", "json", "ldap.toml"], sites)
    assert result.returncode == 2, result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["code"] == "LDAP-CLIENT-MISSING"
    assert "mailwarden[ldap]" in data["errors"][0]


@pytest.mark.parametrize("site", ["ldap.toml", "guard.toml"])
def test_ldap_site_valid_with_the_client(sites: Path, site: str) -> None:
    """The control: the same sites pass where bonsai imports, so the block above is the cause."""
    result = subprocess.run(
        [sys.executable, "-m", "mailwarden", "check-config", site],
        cwd=sites,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_site_without_ldap_does_not_need_the_client(example_site_file: Path) -> None:
    result = run_without_bonsai(["check-config", str(example_site_file)], example_site_file.parent)
    assert result.returncode == 0, result.stderr


def test_bonsai_is_the_ldap_extra_and_make_installs_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("bonsai")]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    assert [d for d in extras["ldap"] if d.startswith("bonsai==")]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    installed = re.findall(r"pip install[^\n]*-e '\.\[([^\]]*)\]'", makefile)
    assert installed, "the Makefile's venv line is not `pip install -e '.[...]'`"
    assert set(installed[0].split(",")) == set(extras), "make serve/test must install them all"


# -- the slow lane: a fresh venv, binary wheels only, no compiler on PATH ----------------------


@dataclass
class FreshVenv:
    bin: Path
    env: dict[str, str]

    def run(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "mailwarden"), *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def _project_copy(target: Path) -> Path:
    """What pip builds from, copied: a build in the shared tree would leave build/ and
    *.egg-info behind while others work in it."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    shutil.copytree(ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _bare_env(path: str) -> dict[str, str]:
    """A login-like environment: no compiler variables; pip's index, cache and proxy settings
    as this machine configures them (/etc/pip.conf is read by pip itself)."""
    keep = {"HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k in keep or k.startswith("PIP_") or k.lower().endswith("_proxy")
    }
    env["PATH"] = path
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    tmp = tmp_path_factory.mktemp("install")
    project = tmp / "project"
    project.mkdir()
    _project_copy(project)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    tools = tmp / "tools"  # pip runs no external tool to install wheels or build a pure package
    tools.mkdir()
    path = f"{venv / 'bin'}{os.pathsep}{tools}"
    for compiler in COMPILERS:
        assert shutil.which(compiler, path=path) is None, f"{compiler} is on {path}"
    env = _bare_env(path)
    # --only-binary=:all: takes every dependency as a published wheel: without it, pip would
    # happily reuse a wheel it once built from source here (its cache holds bonsai's).
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--only-binary=:all:", project],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        pytest.fail(f"pip install failed without a compiler:\n{install.stderr[-3000:]}")
    return FreshVenv(venv / "bin", env)


@pytest.mark.slow
def test_fresh_venv_installs_and_runs_without_a_compiler(fresh_venv: FreshVenv) -> None:
    version = fresh_venv.run(["--version"], ROOT)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"mailwarden {__version__}"
    check = fresh_venv.run(["check-config", str(EXAMPLES / "site.toml")], ROOT)
    assert check.returncode == 0, check.stderr
    assert "is valid" in check.stdout


@pytest.mark.slow
def test_fresh_venv_has_no_ldap_client(fresh_venv: FreshVenv) -> None:
    result = subprocess.run(
        [str(fresh_venv.bin / "python"), "-c", "import bonsai"],
        env=fresh_venv.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode != 0
    assert "No module named 'bonsai'" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("site", "args", "setting"), refusals())
def test_fresh_venv_refuses_ldap_site_at_start(
    fresh_venv: FreshVenv, sites: Path, site: str, args: list[str], setting: str
) -> None:
    assert_refused(fresh_venv.run(_args(args), sites), setting)

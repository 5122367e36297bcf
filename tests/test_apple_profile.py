"""Apple profiles: the plist a device installs, its signature, and the /mobileconfig endpoint."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.address import parse_address
from mailwarden.errors import ConfigError
from mailwarden.profiles import apple
from mailwarden.profiles.signing import Signer, load_signer
from mailwarden.profiles.subject import GENERIC, Subject
from mailwarden.site import Site, load_site, parse_site
from mailwarden.site.model import DomainView, ProfileSettings
from tests.fixtures.server import running_server
from tests.fixtures.signing_ca import SigningPki, make_signing_pki


def _domain(site: Site, name: str) -> DomainView:
    view = site.domain(name)
    assert view is not None
    return view


def _profile(site: Site, address: str, subject: Subject) -> dict[str, Any]:
    parsed = parse_address(address)
    body = apple.render(site, _domain(site, parsed.domain), subject, parsed)
    data: dict[str, Any] = plistlib.loads(body)
    return data


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("openssl is not installed (Debian package openssl)", pytrace=False)
    return path


def _verify(signed: Path, root: Path, out: Path) -> subprocess.CompletedProcess[bytes]:
    """``openssl cms -verify`` as a device does it: only the root is trusted."""
    return subprocess.run(
        [
            _openssl(),
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(signed),
            "-CAfile",
            str(root),
            "-purpose",
            "any",
            "-out",
            str(out),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )


# -- the unsigned plist ----------------------------------------------------------------------


def test_directory_login_and_implicit_tls(example_site: Site) -> None:
    subject = Subject("user@uni-example.de", "user", "u0001", "Demo User")
    profile = _profile(example_site, "user@uni-example.de", subject)
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["EmailAddress"] == "user@uni-example.de"
    assert account["IncomingMailServerHostName"] == "imap.example.edu"
    assert account["IncomingMailServerPortNumber"] == 993
    assert account["IncomingMailServerUseSSL"] is True
    assert account["IncomingMailServerUsername"] == "u0001"
    assert account["OutgoingMailServerPortNumber"] == 465
    assert account["OutgoingMailServerUsername"] == "u0001"
    assert account["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    assert account["OutgoingPasswordSameAsIncomingPassword"] is True
    assert account["PayloadIdentifier"] != profile["PayloadIdentifier"]


def test_never_a_password_nor_a_real_name(example_site: Site) -> None:
    subject = Subject("user@example.edu", "user", "u0001", "Demo User")
    profile = _profile(example_site, "user@example.edu", subject)
    (account,) = profile["PayloadContent"]
    assert not {"IncomingPassword", "OutgoingPassword"} & set(account)
    assert b"Demo User" not in plistlib.dumps(profile)


def test_localpart_rule_and_starttls_only_smtp(example_site: Site) -> None:
    address = "Fred@physics.example.org"
    profile = _profile(example_site, address, Subject(address, "Fred"))
    (account,) = profile["PayloadContent"]
    assert account["IncomingMailServerUsername"] == "Fred"
    assert account["OutgoingMailServerHostName"] == "mail.physics.example.org"
    assert account["OutgoingMailServerPortNumber"] == 587
    assert account["OutgoingMailServerUseSSL"] is True


def test_generic_subject_lets_the_device_ask(example_site: Site) -> None:
    profile = _profile(example_site, "nobody@example.edu", GENERIC)
    (account,) = profile["PayloadContent"]
    assert "EmailAddress" not in account
    assert "IncomingMailServerUsername" not in account
    assert "%" not in plistlib.dumps(profile).decode()


def test_pop_preferred_service_set() -> None:
    site = parse_site(
        """
primary_domain = "pop.example"
[organisation]
name = "Pop Org"
short_name = "Pop"
[[services.main.pop3]]
host = "pop.pop.example"
[[services.main.imap]]
host = "imap.pop.example"
[[services.main.smtp]]
host = "smtp.pop.example"
[services.main]
incoming_first = "pop3"
[domains."pop.example"]
services = "main"
[profiles]
identifier = "example.pop.profiles"
"""
    )
    profile = _profile(site, "a@pop.example", Subject("a@pop.example", "a"))
    (account,) = profile["PayloadContent"]
    assert account["EmailAccountType"] == "EmailTypePOP"
    assert account["IncomingMailServerPortNumber"] == 995
    assert profile["PayloadIdentifier"].startswith("example.pop.profiles.")


def test_identifiers_stable_per_address_and_site(example_site: Site) -> None:
    one = apple.profile_ids(example_site, parse_address("Jane.Doe@Example.EDU"))
    again = apple.profile_ids(example_site, parse_address("jane.doe@example.edu"))
    other = apple.profile_ids(example_site, parse_address("jdoe@example.edu"))
    assert one == again
    assert one.profile_uuid != other.profile_uuid
    assert one.identifier.startswith("edu.example.mail.")
    elsewhere = example_site.model_copy(
        update={"profiles": ProfileSettings(identifier="org.elsewhere.mail")}
    )
    assert apple.profile_ids(elsewhere, parse_address("jane.doe@example.edu")) != one
    assert one.profile_uuid == one.profile_uuid.upper()


_LOCALPART = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10})?", fullmatch=True
)


_EXAMPLE_SITE = load_site(Path(__file__).resolve().parents[1] / "examples" / "site.toml")


@settings(max_examples=150, deadline=None)
@given(localpart=_LOCALPART)
def test_any_valid_address_gives_a_valid_stable_profile(localpart: str) -> None:
    site = _EXAMPLE_SITE
    address = f"{localpart}@example.edu"
    profile = _profile(site, address, Subject(address, localpart))
    (account,) = profile["PayloadContent"]
    assert account["EmailAddress"] == address
    ids = apple.profile_ids(site, parse_address(address.upper()))
    assert profile["PayloadUUID"] == ids.profile_uuid
    assert all("Password" not in key or key.startswith("OutgoingPasswordSame") for key in account)


# -- signing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SigningPki:
    return make_signing_pki(tmp_path_factory.mktemp("pki"))


def _signer(pki: SigningPki, *, chain: bool = True) -> Signer:
    signer = load_signer(
        ProfileSettings(
            signing_certificate=pki.certificate,
            signing_key=pki.key,
            signing_chain=pki.intermediate if chain else None,
        )
    )
    assert signer is not None
    return signer


def test_signed_profile_verifies_with_openssl(
    example_site: Site, pki: SigningPki, tmp_path: Path
) -> None:
    subject = Subject("user@example.edu", "user", "u0001")
    plist = apple.render(
        example_site,
        _domain(example_site, "example.edu"),
        subject,
        parse_address("user@example.edu"),
    )
    signed = tmp_path / "signed.mobileconfig"
    signed.write_bytes(_signer(pki).sign(plist))
    result = _verify(signed, pki.root, tmp_path / "out.plist")
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    assert (tmp_path / "out.plist").read_bytes() == plist  # embedded, byte for byte


def test_tampered_profile_fails_verification(pki: SigningPki, tmp_path: Path) -> None:
    plist = plistlib.dumps({"IncomingMailServerHostName": "imap.example.edu"})
    signed = bytearray(_signer(pki).sign(plist))
    at = bytes(signed).index(b"imap.example.edu")
    signed[at : at + 4] = b"evil"
    tampered = tmp_path / "tampered.mobileconfig"
    tampered.write_bytes(bytes(signed))
    result = _verify(tampered, pki.root, tmp_path / "out.plist")
    assert result.returncode != 0
    assert b"Verification successful" not in result.stderr


def test_signature_needs_the_chain(pki: SigningPki, tmp_path: Path) -> None:
    """Without the intermediate inside, a device trusting only the root cannot verify."""
    path = tmp_path / "nochain.mobileconfig"
    path.write_bytes(_signer(pki, chain=False).sign(b"<plist/>"))
    assert _verify(path, pki.root, tmp_path / "out").returncode != 0


def test_signer_configuration_errors(pki: SigningPki, tmp_path: Path) -> None:
    other = make_signing_pki(tmp_path)
    with pytest.raises(ConfigError, match="does not belong"):
        load_signer(ProfileSettings(signing_certificate=pki.certificate, signing_key=other.key))
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=str(missing)):
        load_signer(ProfileSettings(signing_certificate=missing, signing_key=pki.key))
    with pytest.raises(ConfigError, match="no PEM certificate"):
        load_signer(ProfileSettings(signing_certificate=pki.key, signing_key=pki.key))
    assert load_signer(ProfileSettings()) is None


def test_site_file_requires_key_with_certificate() -> None:
    with pytest.raises(ValueError, match="together"):
        ProfileSettings(signing_certificate=Path("cert.pem"))


# -- through the real server -----------------------------------------------------------------


@pytest.mark.slow  # starts mailwarden serve
def test_mobileconfig_endpoint_unsigned(example_server: str) -> None:
    for path in ("/mobileconfig", "/mobileconfig/"):
        r = httpx.get(f"{example_server}{path}", params={"emailaddress": "Demo.User@Example.EDU"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-apple-aspen-config"
        assert 'filename="example.edu-mail.mobileconfig"' in r.headers["content-disposition"]
        (account,) = plistlib.loads(r.content)["PayloadContent"]
        assert account["IncomingMailServerUsername"] == "u0001"


def test_mobileconfig_endpoint_errors(example_server: str) -> None:
    bad = httpx.get(f"{example_server}/mobileconfig", params={"emailaddress": "<script>"})
    assert bad.status_code == 400
    assert "<script>" not in bad.text
    assert httpx.get(f"{example_server}/mobileconfig").status_code == 400
    unknown = httpx.get(f"{example_server}/mobileconfig", params={"emailaddress": "a@b.example"})
    assert unknown.status_code == 404
    moved = httpx.get(
        f"{example_server}/mobileconfig", params={"emailaddress": "x@alumni.example.edu"}
    )
    assert moved.status_code == 302
    assert moved.headers["location"].startswith("https://autoconfig.alumni-mail.example.net/")
    post = httpx.post(f"{example_server}/mobileconfig", params={"emailaddress": "a@example.edu"})
    assert post.status_code == 405
    head = httpx.head(f"{example_server}/mobileconfig", params={"emailaddress": "a@example.edu"})
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 1000


def test_unknown_address_same_shape_as_known(example_server: str) -> None:
    """Default policy: an unknown address gets a profile of the same shape, login = address."""
    known = plistlib.loads(
        httpx.get(
            f"{example_server}/mobileconfig", params={"emailaddress": "jdoe@example.edu"}
        ).content
    )
    unknown = plistlib.loads(
        httpx.get(
            f"{example_server}/mobileconfig", params={"emailaddress": "nosuch@example.edu"}
        ).content
    )
    assert set(known) == set(unknown)
    assert set(known["PayloadContent"][0]) == set(unknown["PayloadContent"][0])
    assert unknown["PayloadContent"][0]["IncomingMailServerUsername"] == "nosuch@example.edu"


@pytest.mark.slow  # starts mailwarden serve
def test_mobileconfig_endpoint_signed(
    example_site_file: Path, pki: SigningPki, tmp_path: Path
) -> None:
    shutil.copy(pki.certificate, example_site_file.parent / "signer.pem")
    shutil.copy(pki.key, example_site_file.parent / "signer.key")
    shutil.copy(pki.intermediate, example_site_file.parent / "chain.pem")
    with example_site_file.open("a", encoding="utf-8") as file:
        file.write(
            '\n[profiles]\nsigning_certificate = "signer.pem"\nsigning_key = "signer.key"\n'
            'signing_chain = "chain.pem"\n'
        )
    with running_server(example_site_file) as base:
        r = httpx.get(
            f"{base}/mobileconfig/", params={"emailaddress": "max.mustermann@uni-example.de"}
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-apple-aspen-config"
    signed = tmp_path / "signed.mobileconfig"
    signed.write_bytes(r.content)
    result = _verify(signed, pki.root, tmp_path / "out.plist")
    assert result.returncode == 0, result.stderr.decode()
    (account,) = plistlib.loads((tmp_path / "out.plist").read_bytes())["PayloadContent"]
    assert account["IncomingMailServerUsername"] == "mmuster"


def test_serve_refuses_a_bad_signing_key(example_site_file: Path) -> None:
    with example_site_file.open("a", encoding="utf-8") as file:
        file.write('\n[profiles]\nsigning_certificate = "nope.pem"\nsigning_key = "nope.key"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mailwarden", "serve", "--config", str(example_site_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())  # the console may wrap long lines
    assert "nope.pem: cannot read the profile signing certificate" in message
    assert "Traceback" not in result.stderr


def test_check_config_checks_the_signing_files(example_site_file: Path, pki: SigningPki) -> None:
    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mailwarden",
                "check-config",
                "--format",
                "json",
                str(example_site_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    text = example_site_file.read_text(encoding="utf-8")
    example_site_file.write_text(
        text + f'\n[profiles]\nsigning_certificate = "{pki.certificate}"\n'
        f'signing_key = "{pki.intermediate}"\n',
        encoding="utf-8",
    )
    bad = check()
    assert bad.returncode == 2
    assert "not an unencrypted PEM private key" in bad.stdout
    example_site_file.write_text(
        text + f'\n[profiles]\nsigning_certificate = "{pki.certificate}"\n'
        f'signing_key = "{pki.key}"\n',
        encoding="utf-8",
    )
    good = check()
    assert good.returncode == 0, good.stdout
    assert '"profiles_signed": true' in good.stdout

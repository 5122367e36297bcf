"""Write everything ``bench/directory.sh`` needs: one slapd, both servers' configurations.

usage: python -m bench.directory_env WORKDIR USERS

* ``WORKDIR/slapd``: a slapd configuration and its loaded data (the test suite's generator:
  the same schema and service account), USERS plain people ``userNNNN@example.com`` whose
  login names (``zzNNNN``) differ from their addresses;
* ``WORKDIR/env.sh``: ``LDAP_PORT`` and ``SLAPD_CONF`` for the script;
* ``WORKDIR/ours/site.toml``: mailwarden with the LDAP directory (default cache);
  ``WORKDIR/ours-cold/site.toml``: the same with the cache turned off (every request searches);
* ``WORKDIR/automx2/seed.json``: automx2 bound to the same slapd, same filter, same account;
* ``WORKDIR/users.txt``: the USERS addresses the load rotates through.

Both servers search ``(mail=ADDRESS)`` under the same base as the same service account over
plain LDAP on 127.0.0.1: the comparison is between the servers, not their directory setups.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.fixtures.net import free_port
from tests.fixtures.slapd import PEOPLE_DN, SERVICE_DN, SERVICE_PASSWORD, prepare_slapd

SITE = """\
primary_domain = "example.com"

[organisation]
name = "Example University"
short_name = "ExampleUni"

[directory]
backend = "ldap"
servers = ["ldap://127.0.0.1:{port}"]
starttls = false
bind_dn = "{bind_dn}"
password_file = "{password_file}"
base_dn = "{base_dn}"
filter = "(mail={{address}})"
pool_size = 8
{cache}
[[services.default.imap]]
host = "imap.example.com"
port = 993
tls = "implicit"

[[services.default.smtp]]
host = "smtp.example.com"
port = 587
tls = "starttls"

[domains."example.com"]
login = "directory"
"""


def main(workdir: Path, users: int) -> None:
    slapd = prepare_slapd(workdir / "slapd", users=users)
    port = free_port()
    (workdir / "env.sh").write_text(
        f"LDAP_PORT={port}\nSLAPD_CONF={workdir / 'slapd' / 'slapd.conf'}\n"
    )
    for name, cache in (("ours", ""), ("ours-cold", "cache = {max_entries = 0}\n")):
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "site.toml").write_text(
            SITE.format(
                port=port,
                bind_dn=SERVICE_DN,
                password_file=slapd.password_file,
                base_dn=PEOPLE_DN,
                cache=cache,
            )
        )
    seed = {
        "version": 2,
        "provider": "Example University",
        "domains": [{"name": "example.com", "ldapserver_id": 1}],
        "ldapservers": [
            {
                "id": 1,
                "name": "127.0.0.1",
                "port": port,
                "use_ssl": "no",
                "search_base": PEOPLE_DN,
                "search_filter": "(mail={0})",
                "attr_uid": "uid",
                "attr_cn": "cn",
                "bind_user": SERVICE_DN,
                "bind_password": SERVICE_PASSWORD,
            }
        ],
        "servers": [
            {"type": "imap", "name": "imap.example.com", "port": 993},
            {"type": "smtp", "name": "smtp.example.com", "port": 587},
        ],
    }
    (workdir / "automx2").mkdir(parents=True, exist_ok=True)
    (workdir / "automx2" / "seed.json").write_text(json.dumps(seed, indent=2))
    plain = [p.mail for p in slapd.entries if p.uid.startswith("zz")]
    (workdir / "users.txt").write_text("\n".join(plain) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), int(sys.argv[2]))

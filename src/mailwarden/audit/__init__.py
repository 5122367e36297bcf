"""Audit of the live deployment: TLS, certificates, revocation, dual stack and AUTH on every
endpoint the site file names (and the MX hosts DNS names)."""

"""Discovery: the DNS records mail clients need, and a probe that replays each client's lookup."""

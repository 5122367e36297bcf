"""mailwarden: autoconfiguration, discovery, audit, MTA lint and abuse guard for mail teams."""

__version__ = "0.1.0"

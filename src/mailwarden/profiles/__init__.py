"""Pure renderers: (site, domain, subject) → the bytes a client asked for. No I/O here."""

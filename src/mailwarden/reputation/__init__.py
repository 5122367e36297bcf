"""Reputation watch: remote answers that say the big providers start to distrust our mail.

``logline`` parses (pure), ``signatures`` holds the data (``signatures.toml``), ``tally``
counts and reports (pure), ``reader`` and ``follow`` do the file I/O, ``watch`` keeps the
sliding window and decides when to alert (pure). The command is ``mailwarden reputation``.
"""

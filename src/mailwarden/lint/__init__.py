"""MTA dual-stack lint: predict what sendmail or Postfix does with a configuration, and why.

Pure core: parsers (:mod:`.m4`, :mod:`.sendmail`, :mod:`.postfix`), the socket model
(:mod:`.binding`), the rules (:mod:`.sendmail_rules`, :mod:`.postfix_rules`) and the result type
(:mod:`.findings`). The I/O edge is :mod:`.system`; the renderers are in :mod:`.report`.
"""

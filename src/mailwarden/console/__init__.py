"""The operator console: a separate web listener where the helpdesk unlocks, releases and looks
up, and admins lock; authenticated (local accounts, LDAP bind, or a trusted SSO proxy), every
action audited in the guard's history and the log.

Layout: :mod:`config` (the ``[console]`` section), :mod:`users` (local accounts, argon2id),
:mod:`auth` (the three ways in), :mod:`sessions` and :mod:`ratelimit` (cookies, CSRF, login
throttling), :mod:`views` and :mod:`chart` (pure page data and the SVG chart), :mod:`data`
(reading the store, the directory and the audit reports), :mod:`render` (templates, i18n) and
:mod:`app` (the ASGI application).
"""

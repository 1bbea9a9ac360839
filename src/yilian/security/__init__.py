"""Who may see what: authentication (OAuth 2.0 client credentials, SMART scopes, people's
logins), access decisions by institution, relationship and consent, the tamper-evident audit
log (``yilian.security.audit``) and encryption of sensitive fields.

Public surface: :class:`Principal`, :func:`policy_for`, :class:`GrantDeriver` (the write
observer that keeps access grants in step with the record), and the use cases in
:mod:`yilian.security.clients`, :mod:`yilian.security.tokens`, :mod:`yilian.security.people`.
"""

"""OAuth2 for IMAP sign-in (SPEC §9): provider presets, the owner-only token
file, the token-endpoint grants (through Authlib) and the installed-app flow.

The executor's side (access-token cache, XOAUTH2 login) is executor/imap_auth.py.
"""

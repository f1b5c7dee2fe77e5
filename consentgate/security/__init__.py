"""Client security: properties files, secret redaction, the ACL set of each role, local TLS material."""

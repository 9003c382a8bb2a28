"""Getting a finished file to people: verified-TLS mail, exactly-once e-mail delivery and the
development outbox."""

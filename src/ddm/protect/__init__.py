"""Protection: privileges per user, limits before login (later: the SQL firewall and the audit log)."""

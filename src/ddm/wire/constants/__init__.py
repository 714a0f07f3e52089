"""MySQL protocol constants, one module per namespace (COMMAND, CLIENT, SERVER_STATUS, ER, FIELD_TYPE)."""

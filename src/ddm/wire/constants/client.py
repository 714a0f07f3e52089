"""Capability flags: https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html"""

LONG_PASSWORD = 1
FOUND_ROWS = 1 << 1
LONG_FLAG = 1 << 2
CONNECT_WITH_DB = 1 << 3
NO_SCHEMA = 1 << 4
COMPRESS = 1 << 5
ODBC = 1 << 6
LOCAL_FILES = 1 << 7
IGNORE_SPACE = 1 << 8
PROTOCOL_41 = 1 << 9
INTERACTIVE = 1 << 10
SSL = 1 << 11
IGNORE_SIGPIPE = 1 << 12
TRANSACTIONS = 1 << 13
RESERVED = 1 << 14
SECURE_CONNECTION = 1 << 15
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PS_MULTI_RESULTS = 1 << 18
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
SESSION_TRACK = 1 << 23
DEPRECATE_EOF = 1 << 24
OPTIONAL_RESULTSET_METADATA = 1 << 25
QUERY_ATTRIBUTES = 1 << 27
SSL_VERIFY_SERVER_CERT = 1 << 30
REMEMBER_OPTIONS = 1 << 31

# What ddm offers to its clients. COMPRESS is not offered (not implemented), and QUERY_ATTRIBUTES /
# OPTIONAL_RESULTSET_METADATA are MySQL-8-only extensions MariaDB data nodes do not speak. LOCAL_FILES: LOAD DATA
# LOCAL is relayed between the client and the node (ddm.execute.infile).
SERVER_CAPABILITIES = (
    LONG_PASSWORD | FOUND_ROWS | LONG_FLAG | CONNECT_WITH_DB | NO_SCHEMA | ODBC | LOCAL_FILES | IGNORE_SPACE
    | PROTOCOL_41 | INTERACTIVE | SSL | IGNORE_SIGPIPE | TRANSACTIONS | SECURE_CONNECTION | MULTI_STATEMENTS | MULTI_RESULTS
    | PS_MULTI_RESULTS | PLUGIN_AUTH | CONNECT_ATTRS | PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CAN_HANDLE_EXPIRED_PASSWORDS | SESSION_TRACK | DEPRECATE_EOF
)

# MariaDB's extended capabilities: 4 more bytes in the greeting's reserved filler (and the client's handshake
# response), valid when the LONG_PASSWORD bit (CLIENT_MYSQL) is clear. https://mariadb.com/kb/en/connection/
MARIADB_PROGRESS = 1 << 0
MARIADB_COM_MULTI = 1 << 1
MARIADB_STMT_BULK_OPERATIONS = 1 << 2
MARIADB_EXTENDED_METADATA = 1 << 3
MARIADB_CACHE_METADATA = 1 << 4

# What ddm offers of them when its data nodes do (docs/compatibility.md says why not the others):
# STMT_BULK_OPERATIONS: COM_STMT_BULK_EXECUTE runs on the node of a pass-through statement, its answer forwarded.
MARIADB_OFFERED = MARIADB_STMT_BULK_OPERATIONS

"""ddm: a MySQL-compatible distributed database middleware."""

__version__ = "0.1.0"

# The version string a client sees in the handshake: MySQL clients parse the leading "major.minor.patch",
# so it must start with a MySQL 8.0 version number (drivers switch features on it).
SERVER_VERSION = f"8.0.35-ddm-{__version__}"

"""Cython hot paths of ddm: packet codec, SQL lexer/digest, shard functions, result merge, connection protocols."""

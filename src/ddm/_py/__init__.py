"""Pure-Python twins of the Cython modules in ddm_core (tests only; never imported at runtime by the server)."""

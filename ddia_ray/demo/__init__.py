"""The ``ddia-ray demo`` job and the replica core it balances load over."""

"""Test suite; a package so that pytest puts the repository root, not tests/, on sys.path."""

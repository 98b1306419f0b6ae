"""Helpers shared by the tests (and by benchmarks/krita_plugin_speed.py); fixtures live in
tests/conftest.py.

pytest puts tests/ on sys.path (rootdir-based "prepend" import: tests/ has no __init__.py), so
test files import these as `from support.daemon import ...`; scripts outside pytest insert
tests/ into sys.path first.
"""

"""The two tables every conformance module keeps, keyed by the test's name in the module.

``test_session``, ``test_partitioned_session[True]``, ``SessionStoreTests::test_flush``; a key
without ``[...]`` covers every parametrization of the test.

- ``EXCLUDED``: tests of the built-in's internals (its signed cookie, its database model), each with
  a one-line reason; reported as skipped with ``excluded: <reason>``.
- ``XFAIL``: tests that fail on today's code, each with its cause; marked ``xfail(strict=True)``
  (by ``conftest.py``), so the suite stays green and the fix that makes one pass must remove its
  line.
"""

from __future__ import annotations


def entry(table: dict[str, str], name: str) -> str | None:
    """``table``'s line for the test ``name``, exact or for all its parametrizations."""
    if name in table:
        return table[name]
    return table.get(name.split("[", 1)[0])


def check(known: set[str], excluded: dict[str, str], xfail: dict[str, str]) -> None:
    """Each table names only upstream tests the module loaded (``known``: ``test_x`` or
    ``Class::test_y``) and no test is in both: a stale line would otherwise hide nothing, silently."""
    for table_name, table in (("EXCLUDED", excluded), ("XFAIL", xfail)):
        stale = sorted(k for k in table if k.split("[", 1)[0] not in known)
        assert not stale, f"{table_name} names tests that were not loaded: {stale}"
    both = sorted(set(excluded) & set(xfail))
    assert not both, f"in both EXCLUDED and XFAIL: {both}"

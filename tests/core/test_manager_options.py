"""Adapters read SessionManager keywords from framework settings through one function."""

from __future__ import annotations

import pytest

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.manager import MANAGER_OPTIONS, manager_options


def test_names_match_in_any_case_and_app_name_is_split_off() -> None:
    app, options = manager_options(
        {"STORE": "memory://", "write": "manual", "App_Name": "shop"}, source="S"
    )
    assert app == "shop"
    assert options == {"store": "memory://", "write": "manual"}


def test_only_keys_with_the_prefix_are_read() -> None:
    app, options = manager_options(
        {"SK_TIMEOUT_S": 60, "DEBUG": True, "sk_store": "x"}, prefix="SK_", source="S"
    )
    assert app is None and options == {"timeout_s": 60}


def test_unknown_keys_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="SK_NOPE, SK_ZAP") as info:
        manager_options({"SK_NOPE": 1, "SK_ZAP": 2, "SK_STORE": "x"}, prefix="SK_", source="S")
    assert str(info.value).startswith("S: ")


def test_every_keyword_is_an_option() -> None:
    assert {
        "store",
        "write",
        "timeout_s",
        "serialize_access",
        "outage_backoff_s",
    } <= MANAGER_OPTIONS
    assert "self" not in MANAGER_OPTIONS

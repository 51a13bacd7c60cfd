"""Adapters read SessionManager keywords from framework settings through one function."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import sessionkeeper as sk
from sessionkeeper.config import MANAGER_OPTIONS, Settings, manager_options
from sessionkeeper.errors import ConfigurationError


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


def test_the_manager_keywords_are_the_settings_fields() -> None:
    keywords = set(inspect.signature(sk.SessionManager.__init__).parameters) - {"self"}
    assert keywords == MANAGER_OPTIONS


def test_settings_are_validated_without_opening_the_store() -> None:
    with pytest.raises(ConfigurationError, match="timeout_s must be positive"):
        Settings(store="postgresql://nowhere.invalid/x", timeout_s=0)
    settings = Settings(store="postgresql://nowhere.invalid/x", write="time-based:5")
    assert settings.policy == sk.TimeBased(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.timeout_s = 1  # type: ignore[misc]

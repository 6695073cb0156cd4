"""The connection limits as `general_settings` sets them."""
from __future__ import annotations

import pytest

from moneta.application.config import ConnectionLimits
from moneta.infrastructure.config_loader import ConfigError, parse_config


# -- settings ------------------------------------------------------------------------------------

def test_the_connection_limits_have_defaults_and_are_read_from_general_settings(caplog):
    assert parse_config({}, {}).connection_limits == ConnectionLimits(
        max_header_bytes=65536, max_header_count=100, header_timeout_s=10, body_timeout_s=30, keep_alive_timeout_s=5)
    general = {"max_header_size_kb": 16, "max_header_count": 50, "header_timeout_s": 3, "body_timeout_s": 4.5,
               "keep_alive_timeout_s": 75}
    assert parse_config({"general_settings": general}, {}).connection_limits == ConnectionLimits(16384, 50, 3, 4.5, 75)
    assert caplog.text == ""  # known keys


@pytest.mark.parametrize("key, value", [("max_header_size_kb", 0), ("max_header_count", 10.5),
                                        ("max_header_count", 0), ("header_timeout_s", -1), ("body_timeout_s", "x"),
                                        ("keep_alive_timeout_s", 0)])
def test_an_invalid_connection_limit_names_its_key(key, value):
    with pytest.raises(ConfigError, match=f"general_settings.{key}"):
        parse_config({"general_settings": {key: value}}, {})

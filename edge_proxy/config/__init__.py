"""The configuration: a declarative pydantic model by subject, the YAML loader and cross checks.

Import from here: the submodules are an implementation detail.
"""

from edge_proxy.config.model import (
    CommandConfig,
    CommandsConfig,
    Config,
    ConfigError,
    DeviceConfig,
    GatewayConfig,
    LineConfig,
    LinkConfig,
    ParamConfig,
    PointConfig,
    ProfileConfig,
    ReconnectConfig,
    check_param,
    interpolate_env,
    load_config,
    load_config_text,
    param_error,
    parse_duration,
    parse_size,
    validate_tree,
)

__all__ = [
    "CommandConfig",
    "CommandsConfig",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "GatewayConfig",
    "LineConfig",
    "LinkConfig",
    "ParamConfig",
    "PointConfig",
    "ProfileConfig",
    "ReconnectConfig",
    "check_param",
    "interpolate_env",
    "load_config",
    "load_config_text",
    "param_error",
    "parse_duration",
    "parse_size",
    "validate_tree",
]

"""The configuration: a declarative pydantic model by subject, the YAML loader and cross checks.

Import from here: the submodules are an implementation detail. They form one strict order,
each importing only those before it: ``values`` (durations, sizes, ``${VAR}``, the model
base) -> ``gateway`` -> ``telemetry`` (poll groups) -> ``simulation`` (a point's ``simulate:``)
-> ``profiles`` -> ``links`` -> ``devices`` -> ``limits`` -> ``model`` (the root
:class:`Config`) -> ``checks`` (cross-references) -> ``loader`` (YAML, errors);
``schema`` (JSON Schema and the reference page) reads ``model``.
"""

from edge_proxy.config.checks import DriverChecker, ProfileChecker, cross_check
from edge_proxy.config.devices import DeviceConfig
from edge_proxy.config.gateway import (
    EdgeConfig,
    GatewayConfig,
    OutboxConfig,
    ReconnectConfig,
    TlsConfig,
)
from edge_proxy.config.limits import CommandsConfig, ControlConfig, MetricsConfig
from edge_proxy.config.links import LinkConfig, LinkRef
from edge_proxy.config.loader import (
    ConfigError,
    load_config,
    load_config_text,
    parse_yaml,
    validate_tree,
)
from edge_proxy.config.model import Config
from edge_proxy.config.profiles import (
    CommandConfig,
    LineConfig,
    ParamConfig,
    PointConfig,
    ProfileConfig,
    StepConfig,
    check_param,
    param_error,
)
from edge_proxy.config.simulation import SimulateConfig
from edge_proxy.config.telemetry import TelemetryConfig, TelemetryGroupConfig
from edge_proxy.config.values import Duration, Size, interpolate_env, parse_duration, parse_size

__all__ = [
    "CommandConfig",
    "CommandsConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DeviceConfig",
    "DriverChecker",
    "Duration",
    "EdgeConfig",
    "GatewayConfig",
    "LineConfig",
    "LinkConfig",
    "LinkRef",
    "MetricsConfig",
    "OutboxConfig",
    "ParamConfig",
    "PointConfig",
    "ProfileChecker",
    "ProfileConfig",
    "ReconnectConfig",
    "SimulateConfig",
    "Size",
    "StepConfig",
    "TelemetryConfig",
    "TelemetryGroupConfig",
    "TlsConfig",
    "check_param",
    "cross_check",
    "interpolate_env",
    "load_config",
    "load_config_text",
    "param_error",
    "parse_duration",
    "parse_size",
    "parse_yaml",
    "validate_tree",
]

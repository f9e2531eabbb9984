"""``city.yaml``: models and loading. Floor 1, beside schemas/."""

from citylake.config.loader import (
    ConfigDocument,
    ConfigError,
    ConfigProblem,
    LoadedConfig,
    load_config,
)
from citylake.config.models import (
    AlertRule,
    CityConfig,
    DeviceMetadata,
    FlinkConfig,
    IngestConfig,
    LakeConfig,
    LandingConfig,
    MaintenanceConfig,
    MetricType,
    PipelinesConfig,
    ServiceConfig,
    ServicesConfig,
    SidecarConfig,
    SiteRunConfig,
    SourceConfig,
)

__all__ = [
    "AlertRule",
    "CityConfig",
    "ConfigDocument",
    "ConfigError",
    "ConfigProblem",
    "DeviceMetadata",
    "FlinkConfig",
    "IngestConfig",
    "LakeConfig",
    "LandingConfig",
    "LoadedConfig",
    "MaintenanceConfig",
    "MetricType",
    "PipelinesConfig",
    "ServiceConfig",
    "ServicesConfig",
    "SidecarConfig",
    "SiteRunConfig",
    "SourceConfig",
    "load_config",
]

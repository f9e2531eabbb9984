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
    FlinkConfig,
    IngestConfig,
    LakeConfig,
    LandingConfig,
    PipelinesConfig,
    ServiceConfig,
    ServicesConfig,
    SourceConfig,
)

__all__ = [
    "AlertRule",
    "CityConfig",
    "ConfigDocument",
    "ConfigError",
    "ConfigProblem",
    "FlinkConfig",
    "IngestConfig",
    "LakeConfig",
    "LandingConfig",
    "LoadedConfig",
    "PipelinesConfig",
    "ServiceConfig",
    "ServicesConfig",
    "SourceConfig",
    "load_config",
]

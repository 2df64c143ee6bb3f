"""Ready-made connectors built on vastar_fast's public client API.

``vastar_fast.connectors.openai.OpenAIStreamConnector`` streams OpenAI chat completions
(or the simulator's) through the Vastar runtime; its YAML configuration lives in
``vastar_fast.connectors.config``. Importing this package does not import PyYAML; only
loading a config file does.
"""

from .config import ConfigError, ConnectorConfig, MissingAPIKeyError, load_config
from .openai import OpenAIConnectorError, OpenAIStreamConnector, StreamStats

__all__ = [
    "ConfigError",
    "ConnectorConfig",
    "MissingAPIKeyError",
    "OpenAIConnectorError",
    "OpenAIStreamConnector",
    "StreamStats",
    "load_config",
]

"""Configuration: loading, JSON Schema validation, typed configs, `--validate` reports and
`halctl config init` rendering. Importing this package does not import jsonschema."""

from halswarm.config.agent import AgentConfig, Project, load_agent_config, parse_agent_config
from halswarm.config.cli import (
    CliConfig,
    cli_config_candidates,
    default_cli_config_path,
    load_cli_config,
    parse_cli_config,
)
from halswarm.config.errors import ConfigError
from halswarm.config.loader import read_config_file
from halswarm.config.problems import Problem, render
from halswarm.config.render import new_token, render_default, write_config_atomic
from halswarm.config.report import run_validate
from halswarm.config.schemas import KINDS, Kind, defaults, load_schema
from halswarm.config.secrets import ENV_TOKEN, MIN_TOKEN_LENGTH, token_weakness
from halswarm.config.supervisor import SupervisorConfig, load_supervisor_config, parse_supervisor_config
from halswarm.config.validate import detect_kind, validate_data

__all__ = [
    "ENV_TOKEN",
    "KINDS",
    "MIN_TOKEN_LENGTH",
    "AgentConfig",
    "CliConfig",
    "ConfigError",
    "Kind",
    "Problem",
    "Project",
    "SupervisorConfig",
    "cli_config_candidates",
    "default_cli_config_path",
    "defaults",
    "detect_kind",
    "load_agent_config",
    "load_cli_config",
    "load_schema",
    "load_supervisor_config",
    "new_token",
    "parse_agent_config",
    "parse_cli_config",
    "parse_supervisor_config",
    "read_config_file",
    "render",
    "render_default",
    "run_validate",
    "token_weakness",
    "validate_data",
    "write_config_atomic",
]

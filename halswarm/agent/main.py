"""`hal-agent` command line.

    hal-agent --config FILE [--validate [--strict]] [--log-level L] [--log-format F]

``--validate`` checks the file and exits 0 (valid) or 1, one ``PATH: message`` line per problem.
Otherwise the agent runs until SIGTERM/SIGINT (exit 0). Start-up problems (bad config, unusable
``data_dir``, outbox held by another agent) are one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

log = logging.getLogger("halswarm.agent")

DEFAULT_CONFIG = "/etc/hal-o-swarm/agent.config.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hal-agent", description="HAL-O-SWARM agent (opencode bridge for one node)")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                   help=f"config file (JSON, or YAML by extension); default {DEFAULT_CONFIG}")
    p.add_argument("--validate", action="store_true", help="check the config file and exit 0 (valid) or 1")
    p.add_argument("--strict", action="store_true", help="with --validate: unknown keys are errors")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides log.level")
    p.add_argument("--log-format", choices=["json", "text"], help="overrides log.format")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    log_over: dict[str, str] = {}
    if args.log_level:
        log_over["level"] = args.log_level
    if args.log_format:
        log_over["format"] = args.log_format
    return {"log": log_over} if log_over else {}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from halswarm import __version__

        print(f"hal-agent {__version__}")
        return 0
    if args.validate:
        from halswarm.config.report import run_validate

        return run_validate(args.config, "agent", strict=args.strict)

    from halswarm.config.agent import load_agent_config
    from halswarm.config.errors import ConfigError

    try:
        cfg, warnings = load_agent_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        print(f"error: invalid configuration ({args.config})", file=sys.stderr)
        return 1

    from halswarm.core.secret_values import SECRETS, config_secret_values
    from halswarm.logsetup import setup_logging

    SECRETS.add(cfg.auth_token, *config_secret_values(getattr(cfg, "raw", {})))  # never in a log line
    setup_logging(cfg.log_level, cfg.log_format)
    for w in warnings:
        log.warning("config: %s", w)
    try:
        return asyncio.run(_run(cfg))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


async def _run(cfg: Any) -> int:
    from halswarm.agent.app import Agent, StartupError

    agent = Agent(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    try:
        await agent.start()
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        await agent.shutdown()
        return 1
    await agent.wait_stopped()
    await agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Kedro CLI hooks, for what must happen before Kedro builds a session.

- `kedro viz` loads the project in a server process, where a refused setting printed a traceback
  and left the command waiting for a server that never started. The settings are checked here
  first, in the command's own process, and a refusal ends it with its message alone.
- `kedro run` starts its per-clip workers as the command starts (emofusion.run_start)."""

from __future__ import annotations

import sys
from typing import Any

import click
from kedro.framework.cli.hooks import cli_hook_impl
from kedro.framework.cli.utils import _split_params

from emofusion.errors import EmoFusionError
from emofusion.parallel import stop_engine_workers
from emofusion.run_start import start_run_workers
from emofusion.tracking import kedro_mlflow_hook_class

VIEWER_SUBCOMMANDS = ("run", "build", "deploy")


class ProjectCliHooks:
    @cli_hook_impl
    def before_command_run(self, project_metadata: Any, command_args: list[str]) -> None:
        if (not command_args or command_args[0] != "viz" or project_metadata is None
                or project_metadata.package_name != "emofusion"):
            return
        from kedro.framework.session import KedroSession
        from kedro_viz.launchers.cli.run import run as viewer_run

        arguments = command_args[2:] if command_args[1:2] and command_args[1] in VIEWER_SUBCOMMANDS \
            else command_args[1:]
        try:
            options = viewer_run.make_context("viz", list(arguments), resilient_parsing=True).params
        except click.ClickException:
            return  # kedro-viz says what is wrong with its own options
        try:
            with KedroSession.create(project_path=project_metadata.project_path, env=options.get("env"),
                                     runtime_params=_split_params(None, None, options.get("params") or "")
                                     ) as session:
                session.load_context()
        except EmoFusionError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)

    @cli_hook_impl
    def after_command_run(self, project_metadata: Any, command_args: list[str], exit_code: int) -> None:
        """The workers a `kedro run` started as it began end with the command, however it ends:
        left to the process's exit while they start (a run stopped before its pipeline, Ctrl-C),
        a worker forked as the process ends fails to read what it was sent, with a traceback."""
        stop_engine_workers()


cli_hooks = ProjectCliHooks()
# A `kedro run`'s workers start before kedro-mlflow is imported: every `kedro` command imports it for
# its commands, after this module; first here, quietly.
start_run_workers(sys.argv[1:])
kedro_mlflow_hook_class()

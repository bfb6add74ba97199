"""`python -m emofusion`: `kedro run` with its options, or one of EmoFusion's own commands
(`python -m emofusion predict FILE...`)."""
import sys
from pathlib import Path
from typing import Any

from emofusion.cli import cli


def main(*args, **kwargs) -> Any:
    if sys.argv[1:2] and sys.argv[1] in cli.commands:
        return cli(*args, **kwargs)
    # Kedro's own CLI only for `kedro run`: importing it costs `emofusion predict` a third of a second.
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)

    interactive = hasattr(sys, 'ps1')
    kwargs["standalone_mode"] = not interactive

    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()

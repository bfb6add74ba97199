"""Fixtures for every test: the project's parameters as Kedro reads them, and scratch copies of the
project to run `kedro` in. Test files take the parameters from here and read no YAML themselves."""

import copy
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from emofusion import settings
from emofusion.scratch_project import scratch_project as copy_of_project

PROJECT = Path(__file__).resolve().parents[1]


@cache
def project_parameters(env: str) -> dict[str, Any]:
    """conf/base merged with conf/<env> by the project's own loader and merge strategy, read once."""
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(PROJECT / "conf"), env=env,
                                          **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


@pytest.fixture
def parameters() -> dict[str, Any]:
    """conf/base's parameters (a developer's conf/local left out); each test gets its own copy to change."""
    return copy.deepcopy(project_parameters("base"))


@pytest.fixture
def paper_parameters() -> dict[str, Any]:
    """The parameters of the paper environment (conf/base with conf/paper), the reference design."""
    return copy.deepcopy(project_parameters("paper"))


@pytest.fixture(scope="session")
def scratch_project(tmp_path_factory) -> Callable[..., Path]:
    """Make a scratch copy of the project (conf without conf/local, pyproject.toml) in a new folder,
    optionally with conf/local/parameters.yml; its data/ starts empty. A factory, so that a fixture of
    any scope can make one."""

    def make(local_parameters: Mapping[str, Any] | None = None) -> Path:
        return copy_of_project(PROJECT, tmp_path_factory.mktemp("project"), local_parameters)

    return make


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups from the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Side by side (pytest-xdist, `--dist loadgroup`), the tests that share a module-scoped fixture, a
    trained scratch project, run on one worker, so that each project is trained once."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures and any(definitions[-1].scope == "module"
                            for definitions in fixtures.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

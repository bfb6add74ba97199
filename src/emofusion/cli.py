"""`emofusion predict FILE...` (or `kedro predict`): the emotion of new recordings, with a model trained
by `kedro run`. Also Kedro's `kedro run`, and a check before `kedro viz`, that print what the project
refused (an `EmoFusionError`: a setting, a corpus folder, a stale input...) as its message alone."""

from __future__ import annotations

import copy
import functools
import gc
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emofusion.errors import (
    DomainBatchError,
    EmoFusionError,
    ModelMismatchError,
    RunLockedError,
    SpeakersNeededError,
    UnknownPipelineError,
)
from emofusion.inference import (
    default_model,
    load_trained_model,
    predict_emotions,
)
from emofusion.instances import trained_models
from emofusion.pipeline_registry import every_pipeline, pipeline_names
from emofusion.prediction_inputs import audio_files, corpus_note, speaker_fallback_note, speakers_from_csv
from emofusion.run_lock import holder_of, lock_path, refusal_message
from emofusion.run_spec import run_spec

if TYPE_CHECKING:  # pandas only where a command uses it: `kedro run` starts sooner
    import pandas as pd


def refusal(error: BaseException | None) -> EmoFusionError | None:
    """The project's refusal behind an exception, if any: Kedro wraps what a dataset raises in its
    own DatasetError, and a node's error may be raised from another."""
    while error is not None:
        if isinstance(error, EmoFusionError):
            return error
        error = error.__cause__ or error.__context__
    return None


def as_message(error: BaseException, verbose: bool) -> click.ClickException | None:
    """What to raise instead of `error`: the project's refusal as its message alone (click prints
    `Error: ...` and exits with status 1); None, to raise `error` itself with its traceback, for a
    bug, or when --verbose or the `emofusion` logger at DEBUG asks for it."""
    refused = refusal(error)
    if refused is None or verbose or logging.getLogger("emofusion").isEnabledFor(logging.DEBUG):
        return None
    return click.ClickException(str(refused))


def _refusals_as_messages(command: click.Command) -> click.Command:
    """`command` with `--verbose`, printing a refusal as its message (`as_message`)."""
    callback: Callable[..., Any] = command.callback  # type: ignore[assignment]

    @functools.wraps(callback)
    def run(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except Exception as error:
            message = as_message(error, verbose)
            if message is None:
                raise
            raise message from None

    wrapped = copy.copy(command)
    wrapped.params = [*command.params, click.Option(
        ["--verbose"], is_flag=True, help="Show the traceback of a refused run (a setting, a corpus, a "
        "stale input...); without it the message alone is printed.")]
    wrapped.callback = run
    return wrapped


class ProjectCommands(click.Group):
    """EmoFusion's commands, and Kedro's `run` wrapped by `_refusals_as_messages`: Kedro uses a
    project's `run` over its own. Kedro's CLI is imported only when `run` is asked for, since it
    costs `emofusion predict` a third of a second."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "run" and name not in self.commands:
            self.add_command(kedro_run(), "run")
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "run"})


def check_pipeline_names(requested: list[str | None]) -> None:
    """Refuse pipeline names the project does not have, naming those it has (Kedro says it with a
    traceback, once the session is built)."""
    known = [*pipeline_names(), "__default__"]
    unknown = [name for name in requested if name and name not in known]
    if unknown:
        raise UnknownPipelineError(
            f"No pipeline named {', '.join(map(repr, unknown))} in this project; its pipelines: "
            f"{', '.join(known[:-1])} (`kedro run` without --pipelines runs them all)")


@functools.cache
def kedro_run() -> click.Command:
    """Kedro's `kedro run`, refusals printed as messages, refused at once while another run holds
    the project's data folder (the run's own hook takes the lock, after Kedro has built the run)."""
    from kedro.framework.cli.project import run as kedro_run_command
    from kedro.utils import find_kedro_project


    def run_unless_locked(*args: Any, **kwargs: Any) -> Any:
        lock = lock_path(find_kedro_project(Path.cwd()) or Path.cwd())
        holder = holder_of(lock)
        if holder is not None:
            raise RunLockedError(refusal_message(lock, holder))
        check_pipeline_names([kwargs.get("pipeline"), *(kwargs.get("pipelines") or [])])
        result = kedro_run_command.callback(*args, **kwargs)
        # The command's process ends next: its last garbage collection, over every object a run
        # made and imported (a second on RAVDESS's per-clip stages), would free nothing the
        # system does not take back at exit.
        gc.freeze()
        return result

    command = copy.copy(kedro_run_command)
    command.callback = functools.update_wrapper(run_unless_locked, kedro_run_command.callback)
    return _refusals_as_messages(command)


def __getattr__(name: str) -> Any:
    # Kedro's `find_run_command` (`python -m emofusion`) reads a project's `run` from this module.
    if name == "run":
        return kedro_run()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@click.group(cls=ProjectCommands)
def cli() -> None:
    """EmoFusion's own commands, as `emofusion <command>` and, since Kedro adds a project's
    `cli` group to its own, `kedro <command>`. Run them in the project folder."""

def _quiet(verbose: bool) -> None:
    """The answer alone on stdout; warnings (with --verbose, the whole log) on stderr. Set before
    TensorFlow, Kedro or the workers start, which read the environment."""
    if not verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")
        warnings.filterwarnings("ignore")


def _runtime_params(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, Any]:
    """`--params` read as `kedro run` reads it: comma-separated `key=value` items, a dotted key
    setting a nested parameter, each value typed as YAML types it (`0.3`, `true`, `[ravdess]`)."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        return {}
    from omegaconf import OmegaConf  # Kedro's own parser of these items; imported only when given

    dot_list = []
    for item in items:
        key, equals, setting = item.partition("=")
        if not equals:
            ctx.fail(f"Invalid format of `{param.name}` option: Item `{item}` must contain a key and a value "
                     "separated by `=`.")
        if not key.strip():
            ctx.fail(f"Invalid format of `{param.name}` option: Parameter key cannot be an empty string.")
        dot_list.append(f"{key.strip()}={setting}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(dot_list))


def _log_to_stderr(verbose: bool) -> None:
    """Kedro's logging configuration prints to stdout at INFO: predict's log goes to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers = [handler]
    level = logging.INFO if verbose else logging.WARNING
    for name in ("", "kedro", "emofusion"):
        logging.getLogger(name).setLevel(level)


def _render(table: pd.DataFrame, form: str) -> str:
    import pandas as pd

    if form == "csv":
        return table.to_csv(index=False, float_format="%.4f").rstrip("\n")
    if form == "json":
        return table.to_json(orient="records", double_precision=4, indent=1)
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        return table.to_string(index=False, float_format="%.3f", na_rep="")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_name", metavar="VARIANT.CLASSIFIER",
              help="A trained model, e.g. mfcc_lpcc_cnn.svm (default: the best unweighted average recall "
                   "on validation clips, `validation_uar` in data/08_reporting/model_summary.csv, among "
                   "the models that need no speakers unless --same-speaker or --speakers is given).")
@click.option("--output", type=click.Path(path_type=Path),
              help="Also write the table to this CSV (default for a folder: predictions.csv); its folder "
                   "is made if needed.")
@click.option("--format", "form", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="How the answer is printed on stdout.")
@click.option("--windows", "per_window", is_flag=True,
              help="One row per window (with its start in seconds) instead of one per file.")
@click.option("--hop", "hop_s", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Recordings longer than the training clips are cut into windows of their duration every "
                   "SECONDS (default: audio.window_hop_s); a file's emotion is its windows' mean "
                   "probability.")
@click.option("--env", default=None, help="Configuration environment, as for `kedro run --env`.")
@click.option("--params", default="", callback=_runtime_params,
              help="Parameters given to the training run, as for `kedro run --params`.")
@click.option("--same-speaker", is_flag=True,
              help="All the files are one speaker's. A model trained on features standardised per speaker "
                   "standardises them together.")
@click.option("--speakers", "speakers_table", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A CSV with columns path and speaker (paths relative to the CSV), for a model trained "
                   "on features standardised per speaker: each speaker's files are standardised together.")
@click.option("--same-domain", is_flag=True,
              help="The files are one domain (one corpus or recording set: another language, microphone or "
                   "setting than the training clips) and mix emotions: their features are standardised by "
                   "their own statistics, then put on the training clips' scale (at least "
                   "domain_statistics.min_files files). A model standardised per corpus always does this.")
@click.option("--verbose", is_flag=True, help="Log every step on stderr, and show tracebacks.")
def predict(paths: tuple[Path, ...], model_name: str | None, output: Path | None, form: str, per_window: bool,
            hop_s: float | None, env: str | None, params: dict, same_speaker: bool,
            speakers_table: Path | None, same_domain: bool, verbose: bool) -> None:
    """Predict the emotion of each audio FILE (any format, rate, channels or length; folders are
    searched for audio files), with a model trained by `kedro run`. Every file gets a row: its
    emotion, or the reason it could not be used."""
    import pandas as pd

    _quiet(verbose)
    project = Path.cwd()
    if not (project / "pyproject.toml").is_file() or not (project / "conf").is_dir():
        raise click.ClickException(f"{project} is not the EmoFusion project folder: run this where "
                                   "conf/ and pyproject.toml are")
    if same_speaker and speakers_table:
        raise click.ClickException("give --same-speaker or --speakers, not both")
    if same_domain and (same_speaker or speakers_table):
        raise click.ClickException("give --same-domain (a model without speakers) or the speakers (a model "
                                   "standardised per speaker), not both")
    try:
        table, rejected = _predict(paths, model_name, hop_s, env, params, same_speaker, speakers_table,
                                   same_domain, per_window, verbose)
    except Exception as error:  # what the project refused, as its message; a bug with its traceback
        message = as_message(error, verbose)
        if message is None:
            raise
        raise message from None
    rows = pd.concat([table, rejected.rename(columns={"clip_id": "file"})[["file", "reason"]]],
                     ignore_index=True) if len(rejected) else table
    if "windows" in rows:  # a count, also beside the rows of rejected files
        rows["windows"] = rows["windows"].astype("Int64")
    click.echo(_render(rows, form) if len(rows) else "No files.")
    if output is None and any(path.is_dir() for path in paths):
        output = Path("predictions.csv")
    if len(rejected):
        click.echo(f"{len(rejected)} file(s) could not be used: the reason is in their row.", err=True)
    if output is not None and len(rows):
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(output, index=False)
        except OSError as error:
            raise click.ClickException(f"could not write {output}: {error}") from error
        click.echo(f"Wrote {output}", err=True)
    if table.empty:
        sys.exit(1)


def _predict(paths: tuple[Path, ...], model_name: str | None, hop_s: float | None, env: str | None,
             params: dict, same_speaker: bool, speakers_table: Path | None, same_domain: bool,
             per_window: bool, verbose: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The predictions (per file, or per window) and the files that could not be used, with why."""
    import pandas as pd
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project


    project = Path.cwd()
    files, missing = audio_files(paths)
    try:
        speakers = (speakers_from_csv(speakers_table, files) if speakers_table
                    else ["one speaker"] * len(files) if same_speaker else None)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        _log_to_stderr(verbose)
        context = session.load_context()
        catalog = context.catalog
        spec = run_spec(context.params)
        trained = trained_models(catalog, spec.every_model)
        if not trained:
            raise click.ClickException("no trained models yet: run `kedro run` first")
        if model_name is None:
            model_name = default_model(catalog.load("model_summary"), None if speakers is not None
                                       else spec.speaker_normalised_models)
        elif model_name not in trained:
            raise click.ClickException(f"there is no trained model '{model_name}'; --model takes one of: "
                                       + ", ".join(trained))
        variant, _, classifier = model_name.partition(".")
        model, model_card = load_trained_model(catalog.load, variant, classifier, lock_path(project),
                                               say=lambda line: click.echo(line, err=True))
        click.echo(f"Model {variant}.{classifier}; {len(files)} file(s).", err=True)
        features = model_card.get("features")
        normalisation = features.get("speaker_normalisation") if isinstance(features, dict) else None
        if speakers is not None and (not normalisation or normalisation.get("by", "speaker") != "speaker"):
            click.echo("This model does not standardise features per speaker: the speakers change nothing.",
                       err=True)
        try:
            table, windows, rejected = (predict_emotions(files, variant, model, model_card,
                                                         every_pipeline(spec.feature_pipelines, spec),
                                                         context.params, speakers, hop_s, same_domain,
                                                         say=lambda line: click.echo(line, err=True))
                                        if files else (pd.DataFrame(columns=["file", "emotion"]),) * 2
                                        + (pd.DataFrame(columns=["clip_id", "reason"]),))
        except (ModelMismatchError, SpeakersNeededError, DomainBatchError) as error:
            raise click.ClickException(f"model '{model_name}': {error}") from error
    by = normalisation.get("by", "speaker") if normalisation else None
    if by == "speaker" and speakers is not None:
        note = speaker_fallback_note(windows, files, speakers, normalisation["min_clips"])
        if note:
            click.echo(note, err=True)
    if by == "corpus" and len(windows):
        click.echo(corpus_note(windows, normalisation["min_clips"]), err=True)
    rejected = pd.concat([missing.rename(columns={"file": "clip_id"}), rejected[["clip_id", "reason"]]],
                         ignore_index=True)
    return (windows if per_window else table), rejected

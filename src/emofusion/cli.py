"""`emofusion predict FILE...` (or `kedro predict`): the emotion of new recordings, with a model trained
by `kedro run`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pandas as pd
from kedro.framework.cli.utils import _split_params  # `kedro run --params` parsing


@click.group()
def cli() -> None:
    """EmoFusion's own commands, as `emofusion <command>` and, since Kedro adds a project's
    `cli` group to its own, `kedro <command>`. Run them in the project folder."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_name", metavar="VARIANT.CLASSIFIER",
              help="A trained model, e.g. mfcc_lpcc_ir.svm (default: the best unweighted average recall "
                   "on validation clips, `validation_uar` in data/08_reporting/model_summary.csv, among "
                   "the models that need no speakers unless --same-speaker or --speakers is given).")
@click.option("--output", type=click.Path(path_type=Path),
              help="Write the predictions to this CSV (default for a folder: predictions.csv).")
@click.option("--env", default=None, help="Configuration environment, as for `kedro run --env`.")
@click.option("--params", default="", callback=_split_params,
              help="Parameters given to the training run, as for `kedro run --params`.")
@click.option("--same-speaker", is_flag=True,
              help="All the files are one speaker's. A model trained on features standardised per speaker "
                   "standardises them together.")
@click.option("--speakers", "speakers_table", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A CSV with columns path and speaker (paths relative to the CSV), for a model trained "
                   "on features standardised per speaker: each speaker's files are standardised together.")
def predict(paths: tuple[Path, ...], model_name: str | None, output: Path | None, env: str | None,
            params: dict, same_speaker: bool, speakers_table: Path | None) -> None:
    """Predict the emotion of each audio FILE (any format, rate, channels or length; folders are
    searched for audio files), with a model trained by `kedro run`."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.io import DatasetError

    from emofusion.inference import (
        ModelMismatchError,
        SpeakersNeededError,
        audio_files,
        needs_speakers,
        predict_emotions,
        speakers_from_csv,
    )

    project = Path.cwd()
    if not (project / "pyproject.toml").is_file() or not (project / "conf").is_dir():
        raise click.ClickException(f"{project} is not the EmoFusion project folder: run this where "
                                   "conf/ and pyproject.toml are")
    if same_speaker and speakers_table:
        raise click.ClickException("give --same-speaker or --speakers, not both")
    try:
        files = audio_files(paths)
        speakers = (speakers_from_csv(speakers_table, files) if speakers_table
                    else ["one speaker"] * len(files) if same_speaker else None)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        context = session.load_context()
        catalog = context.catalog
        if model_name is None:
            try:
                summary = catalog.load("model_summary")
            except DatasetError as error:
                raise click.ClickException("no trained models yet: run `kedro run` first") from error
            usable = ~summary["variant"].isin(needs_speakers(context.params["fusion_variants"]))
            if speakers is None and usable.any():  # without speakers, a model that needs none
                summary = summary[usable]
            # The best on validation clips: the test clips' scores choose nothing.
            best = summary["validation_uar"].idxmax() if "validation_uar" in summary else summary.index[0]
            model_name = f"{summary['variant'].loc[best]}.{summary['classifier'].loc[best]}"
        variant, _, classifier = model_name.partition(".")
        try:
            model = catalog.load(f"modelling.{variant}.{classifier}.trained_model")
            model_card = catalog.load(f"modelling.{variant}.{classifier}.model_card")
        except DatasetError as error:
            raise click.ClickException(
                f"model '{model_name}' is incomplete or missing (it needs its trained model and its model "
                f"card, from `kedro run --pipeline=modelling`): {str(error).splitlines()[0]}") from error
        click.echo(f"Model {variant}.{classifier}; {len(files)} file(s).", err=True)
        if speakers is not None and not model_card["features"].get("speaker_normalisation"):
            click.echo("This model does not standardise features per speaker: the speakers change nothing.",
                       err=True)
        try:
            table, rejected = predict_emotions(files, variant, model, model_card, pipelines, context.params,
                                               speakers)
        except (ModelMismatchError, SpeakersNeededError) as error:
            raise click.ClickException(f"model '{model_name}': {error}") from error
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        click.echo(table.to_string(index=False, float_format="%.3f") if len(table)
                   else "No file could be used.")
    for clip, reason in zip(rejected["clip_id"], rejected["reason"], strict=True):
        click.echo(f"Rejected {clip}: {reason}", err=True)
    if output is None and any(path.is_dir() for path in paths):
        output = Path("predictions.csv")
    if output is not None and len(table):
        table.to_csv(output, index=False)
        click.echo(f"Wrote {output}", err=True)
    if table.empty:
        sys.exit(1)


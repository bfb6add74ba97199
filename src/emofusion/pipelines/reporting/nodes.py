"""Figures and one HTML report from the modelling outputs. Plotly figures, so kedro-viz previews
them and the report stays interactive without a server."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
import yaml
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from emofusion.fusion_layout import CNN_STREAM
from emofusion.learning.selection import resampling_units

SCORES = {"accuracy": "accuracy", "unweighted_average_recall": "unweighted average recall",
          "macro_f1": "macro F1"}


def confusion_matrix_figure(classification_metrics: Mapping[str, Any]) -> go.Figure:
    """Counts beside row-normalised shares: the counts show how many clips a cell is, the shares
    compare emotions of different sizes (their diagonal is each emotion's recall)."""
    labels = classification_metrics["confusion_matrix"]["labels"]
    counts = np.asarray(classification_metrics["confusion_matrix"]["counts"], dtype=int)
    true_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, true_totals, out=np.zeros(counts.shape), where=true_totals > 0)
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                           subplot_titles=("Clips", "Share of each true emotion"))
    for column, values, text in ((1, counts, "%{z}"), (2, shares, "%{z:.2f}")):
        figure.add_trace(go.Heatmap(
            # Lists, not arrays: the saved JSON stays readable by any tool.
            z=values.tolist(), x=labels, y=labels, texttemplate=text, colorscale="Blues", showscale=False,
            zmin=0, zmax=1 if column == 2 else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>" + text + "<extra></extra>"), 1, column)
    figure.update_xaxes(title_text="predicted emotion")
    figure.update_yaxes(title_text="true emotion", autorange="reversed", col=1)
    figure.update_yaxes(autorange="reversed", col=2)
    figure.update_layout(
        title=(f"{classification_metrics['test_clips']} test clips in {classification_metrics['folds']} "
               f"fold(s): accuracy {classification_metrics['accuracy']:.3f}, unweighted average recall "
               f"{classification_metrics['unweighted_average_recall']:.3f}"),
        height=460, width=980)
    return figure


def model_comparison_figure(model_summary: pd.DataFrame) -> go.Figure:
    """Accuracy, unweighted average recall and macro F1 of every variant, one row per classifier,
    variants in the summary's order (best validation UAR first)."""
    scores = model_summary.melt(id_vars=["variant", "classifier"], value_vars=list(SCORES),
                                var_name="score", value_name="value")
    scores["score"] = scores["score"].map(SCORES)
    figure = px.bar(scores, x="variant", y="value", color="score", barmode="group",
                    facet_row="classifier", text_auto=".2f", range_y=[0, 1],
                    category_orders={"variant": list(dict.fromkeys(model_summary["variant"])),
                                     "score": list(SCORES.values())},
                    title=f"Test scores, {model_summary['split'].iloc[0]} split")
    figure.for_each_annotation(lambda note: note.update(text=note.text.replace("classifier=", "")))
    figure.update_yaxes(title_text="")
    figure.update_layout(height=300 * model_summary["classifier"].nunique() + 100, width=980)
    return figure


def per_class_f1_figure(**classification_metrics: Mapping[str, Any]) -> go.Figure:
    """F1 of each emotion (columns) for each `<variant>__<classifier>` (rows): which emotions a
    model confuses, and whether a stream helps all of them or only some."""
    f1 = pd.DataFrame({instance.replace("__", " · "): {emotion: scores["f1"] for emotion, scores
                                                       in metrics["per_class"].items()}
                       for instance, metrics in classification_metrics.items()}).T
    f1 = f1.loc[f1.mean(axis=1).sort_values(ascending=False).index]
    figure = go.Figure(go.Heatmap(
        z=f1.to_numpy().tolist(), x=list(f1.columns), y=list(f1.index), zmin=0, zmax=1, colorscale="Viridis",
        texttemplate="%{z:.2f}", colorbar={"title": "F1"},
        hovertemplate="%{y}<br>%{x}: F1 %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(title="F1 per emotion, best mean F1 first", xaxis_title="emotion",
                         height=max(320, 160 + 36 * len(f1)), width=980)
    return figure


def _p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def answers_in_words(model_answers: pd.DataFrame, question: str) -> list[str]:
    """One plain sentence per scope (all classifiers, then each) answering `question` from the
    run's answers (`answer_questions`): the models chosen on validation clips with and without the
    lever, and the gain with its interval. Only an interval that excludes 0 is read as a finding;
    otherwise the data cannot tell."""
    sentences = []
    for row in model_answers[model_answers["question"] == question].itertuples(index=False):
        scope = "all classifiers" if row.scope == "all" else row.scope
        p = row.mcnemar_p
        sentences.append(
            f"{scope}: chosen with it: {row.model} (UAR {row.unweighted_average_recall:.3f}); without it: "
            f"{row.other} (UAR {row.other_uar:.3f}): {100 * row.gain:+.1f} points (95% interval "
            f"{100 * row.gain_low:+.1f} to {100 * row.gain_high:+.1f}), McNemar p "
            f"{'' if p < 0.001 else '= '}{_p_value(p)}: {row.answer}.")
    return sentences


def _why_the_cnn_may_not_help(model: pd.Series) -> str:
    """Plain reasons, from the run's own facts, why the CNN stream may show no gain."""
    reasons = []
    if "not pretrained" in str(model.get("weights", "")):
        reasons.append(" Its CNN has random weights (transfer_features.weights: none), so its features are "
                       "random projections of the spectrograms, not what ImageNet taught the network.")
    if int(model["test_clips"]) < 200:
        reasons.append(f" With {int(model['test_clips'])} test clips, a few clips decide the difference.")
    return "".join(reasons)


def _gains(models: pd.DataFrame, other: str, other_uar: str, gain: str, p: str) -> pd.DataFrame:
    """Each model's UAR against the other side's, from the summary's comparison columns."""
    return pd.DataFrame({
        "model": models["variant"] + " · " + models["classifier"],
        "UAR": models["unweighted_average_recall"],
        "compared with (chosen on validation)": models[other] + " · " + models["classifier"],
        "its UAR": models[other_uar],
        "gain (points)": [f"{100 * value:+.1f}" for value in models[gain]],
        "95% interval": [f"{100 * low:+.1f} to {100 * high:+.1f}"
                         for low, high in zip(models[f"{gain}_low"], models[f"{gain}_high"], strict=True)],
        "McNemar p": [_p_value(value) for value in models[p]],
    })


def _stream_gains(model_summary: pd.DataFrame) -> str:
    """Each fused model against its reference, or a line saying there is none."""
    fused = model_summary[model_summary["reference"].notna()]
    if fused.empty:
        return "<p>No model fuses streams whose subsets were also trained: nothing to compare.</p>"
    table = _gains(fused, "reference", "reference_uar", "uar_gain", "mcnemar_p")
    table.insert(6, "clips gained / lost", [f"{won:.0f} / {lost:.0f}" for won, lost
                                            in zip(fused["clips_gained"], fused["clips_lost"], strict=True)])
    return f"""<p>Each model that fuses two or more streams against its reference: the model of the same
classifier chosen, fold by fold, on validation clips among those built from a strict subset of its
streams (single streams included, normalised alike), on the same test clips. Gain: the difference in
unweighted average recall (UAR), with its 95% paired bootstrap interval. Clips gained / lost: test
clips only this model / only the reference got right; McNemar p: exact two-sided test on those
clips.</p>
{_table(table)}"""


def _speaker_normalisation_gains(model_summary: pd.DataFrame, model_answers: pd.DataFrame) -> str:
    """The run's answer, then each model standardised per speaker against the same streams as
    they are, if any."""
    normalised = model_summary[model_summary["without_speaker_normalisation"].notna()]
    if normalised.empty:
        return ""
    table = _gains(normalised, "without_speaker_normalisation", "without_speaker_normalisation_uar",
                   "speaker_normalisation_gain", "speaker_normalisation_mcnemar_p")
    return f"""<h2 id="speakers">Does per-speaker normalisation help?</h2>
<p>Each model whose features were standardised per speaker (each clip by the statistics of its own
speaker's clips, a test speaker's from that speaker's unlabelled clips) against the same classifier
on the same streams as they are, on the same test clips. With a random split the test speakers are
also training speakers, and a voice is itself a cue that normalisation removes; the speaker-independent
split shows what it is worth for new speakers.</p>
<ul>{"".join(f"<li>{html.escape(sentence)}</li>" for sentence in answers_in_words(
    model_answers, "does per-speaker normalisation help?"))}</ul>
{_table(table)}"""


def _corpus_scores(corpus_scores: pd.DataFrame, model_summary: pd.DataFrame, split: str) -> str:
    """Each model's scores on each test corpus with their intervals, and the share of that corpus's
    test clips its models flagged out of their training clips' domain, models in the summary's
    order."""
    names = model_summary["variant"] + " · " + model_summary["classifier"]
    order = {name: rank for rank, name in enumerate(names)}
    model = corpus_scores["variant"] + " · " + corpus_scores["classifier"]
    table = pd.DataFrame({
        "model": model, "test corpus": corpus_scores["corpus"], "test clips": corpus_scores["test_clips"],
        **{name: [f"{value:.3f} ({low:.3f} to {high:.3f})" for value, low, high in zip(
            corpus_scores[score], corpus_scores[f"{score}_low"], corpus_scores[f"{score}_high"], strict=True)]
           for score, name in SCORES.items()},
        "flagged out of domain": ["" if pd.isna(share) else f"{100 * share:.1f}%"
                                  for share in corpus_scores["out_of_domain"]],
    }).assign(rank=model.map(order)).sort_values(["rank", "test corpus"], kind="stable").drop(columns="rank")
    left_out = (" Each corpus was tested by models trained on the other corpora alone (leave one corpus "
                "out), on the emotions it shares with them." if split == "leave_one_corpus_out" else "")
    return f"""<h2 id="corpora">Scores per test corpus</h2>
<p>Each model's scores on the test clips of each corpus, with 95% bootstrap intervals.{left_out}
Flagged out of domain: the share of those test clips farther from the model's training clips than
the threshold that 95% of its validation clips pass (<code>out_of_domain.pass_share</code>), as
<code>emofusion predict</code> flags a file in its <code>in_domain</code> column. Clips like the
training clips are flagged at about 5%; far more says the corpus is unlike what the model was
trained on.</p>
{_table(table)}"""


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="table", float_format="{:.3f}".format)


def _figure(figure: go.Figure) -> str:
    return pio.to_html(figure, full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})


# The report's sections, for its contents list.
SECTIONS = (("run", "What was run"), ("chosen", "The model chosen on validation clips"),
            ("streams", "Does each stream help?"),
            ("speakers", "Does per-speaker normalisation help?"),
            ("scores", "Scores on the test clips"), ("corpora", "Scores per test corpus"),
            ("f1", "F1 per emotion"),
            ("confusion", "Confusion matrices"), ("settings", "Settings"))
# The parameters that make features and models, in the order they act.
SETTINGS_SHOWN = ("corpora", "emotions", "audio", "mfcc", "lpcc", "opensmile", "log_mel_spectrogram",
                  "transfer_features", "fusion_variants", "block_weights", "block_scaling",
                  "speaker_statistics", "reduction", "split", "classifiers", "random_seed")


def _backbone_used(model_summary: pd.DataFrame) -> tuple[str, str]:
    """The CNN backbone and weights the models used, and, when that is not the one asked for, which
    was asked for and why it was not used (an HTML sentence)."""
    if "backbone" not in model_summary:
        return "none (no variant uses CNN features)", ""
    columns = [column for column in ("backbone", "weights", "backbone_requested", "fallback_reason")
               if column in model_summary]
    cnn = model_summary.loc[model_summary["backbone"].fillna("") != "", columns].fillna("").drop_duplicates()
    if cnn.empty:
        return "none (no variant uses CNN features)", ""
    used = "; ".join(f"{row.backbone}, weights: {row.weights}" for row in cnn.itertuples(index=False))
    fallback = "".join(
        f" <b>Asked for {html.escape(row.backbone_requested)}; the offline fallback "
        f"{html.escape(row.backbone)} was used instead</b>: {html.escape(row.fallback_reason)}"
        for row in cnn.itertuples(index=False)
        if getattr(row, "backbone_requested", "") and row.backbone_requested != row.backbone)
    return used, fallback


def _long_clips(clip_manifest: pd.DataFrame, parameters: Mapping[str, Any] | None) -> str:
    """What became of clips longer than the clip duration, when there were any."""
    if "kept_duration_s" not in clip_manifest:
        return ""
    long = clip_manifest[clip_manifest["speech_duration_s"] > clip_manifest["kept_duration_s"] + 1e-3]
    sources = long["source_clip_id"].nunique() if "source_clip_id" in long else len(long)
    if not sources:
        return " No clip was longer than the clip duration."
    audio = (parameters or {}).get("audio", {})
    if audio.get("long_clips") == "windows":
        return (f" {sources} clips were longer than {audio.get('duration_s')} s and were cut into windows "
                f"every {audio.get('window_hop_s')} s (audio.long_clips: windows).")
    return (f" {sources} clips were longer than the clip duration and were cropped "
            f"(audio.crop: {audio.get('crop', '?')}; clip_manifest has their durations).")


def html_report(model_summary: pd.DataFrame, model_answers: pd.DataFrame, corpus_scores: pd.DataFrame,
                model_comparison: go.Figure, per_class_f1: go.Figure,
                clip_manifest: pd.DataFrame, rejected_clips: pd.DataFrame, data_split: pd.DataFrame,
                data_split_settings: Mapping[str, Any], classifiers: Mapping[str, Any],
                fusion_variants: Mapping[str, Any], parameters: Mapping[str, Any] | None = None,
                **confusion_matrices: go.Figure) -> str:
    """One HTML file with plotly.js inside, so it opens in a browser with no network: what was
    run, on which clips, whether each stream helps (the project's question, so it comes first),
    the scores and the figures. The split is described as it was made (`data_split_settings`), not
    as this run's parameters ask. `parameters`: the run's, of which the settings that make features
    and models are listed."""
    corpora = (clip_manifest.groupby("corpus")
               .agg(clips=("clip_id", "size"), emotions=("emotion", "nunique"),
                    speakers=("speaker", "nunique"))
               .join(rejected_clips.groupby("corpus").size().rename("rejected"))
               .fillna({"rejected": 0}).astype({"rejected": int}).reset_index())
    emotions = clip_manifest["emotion"].value_counts().rename_axis("emotion").reset_index(name="clips")
    subsets = (data_split.groupby(["fold", "subset"]).size().unstack(fill_value=0)
               .rename_axis(columns=None).reset_index())
    backbone, fallback = _backbone_used(model_summary)
    rejected = (_table(rejected_clips[["clip_id", "corpus", "stage", "reason"]]) if len(rejected_clips)
                else "<p>None.</p>")
    split_made_with = ", ".join(f"{key}={value}" for key, value in data_split_settings.items())
    shown = {"fusion_variants": dict(fusion_variants), "classifiers": dict(classifiers)}
    shown = {key: (parameters or {}).get(key, shown.get(key)) for key in SETTINGS_SHOWN
             if key in shown or key in (parameters or {})}
    settings = yaml.safe_dump(json.loads(json.dumps(shown, default=str)), default_flow_style=None,
                              sort_keys=False, width=100)
    scores = model_summary[["variant", "classifier", "fusion", "width", "folds", "test_clips", *SCORES,
                            "validation_uar", "chosen_on_validation"]].assign(**{
        "UAR 95% interval": [f"{low:.3f} to {high:.3f}" for low, high in zip(
            model_summary["unweighted_average_recall_low"], model_summary["unweighted_average_recall_high"],
            strict=True)]})
    scores = scores.fillna({"chosen_on_validation": ""}).rename(
        columns={"test_clips": "test clips", "validation_uar": "validation UAR",
                 "chosen_on_validation": "chosen on validation clips", **SCORES})
    verdicts = "".join(f"<li>{html.escape(sentence)}</li>"
                       for sentence in answers_in_words(model_answers, "does the CNN stream help?"))
    uses_cnn = model_summary[model_summary["streams"].str.contains(CNN_STREAM, regex=False)]
    caveats = _why_the_cnn_may_not_help(uses_cnn.iloc[0]) if len(uses_cnn) else ""
    picked = model_answers[model_answers["question"] == "chosen model"]
    chosen = pd.DataFrame({
        "among": picked["scope"].replace({"all": "all models"}),
        "chosen on validation clips, per fold": picked["model"],
        **{name: [f"{value:.3f} ({low:.3f} to {high:.3f})" for value, low, high in zip(
            picked[score], picked[f"{score}_low"], picked[f"{score}_high"], strict=True)]
           for score, name in SCORES.items()}})
    units = resampling_units(data_split, data_split_settings)
    resampled = "speakers" if any(unit.startswith("speaker ") for unit in units.values()) else "clips"
    confusion = "".join(f"<div><h3>{html.escape(name.replace('__', ' · '))}</h3>{_figure(figure)}</div>"
                        for name, figure in confusion_matrices.items())
    speakers = _speaker_normalisation_gains(model_summary, model_answers)
    sections = [(anchor, title) for anchor, title in SECTIONS if anchor != "speakers" or speakers]
    contents = "".join(f'<li><a href="#{anchor}">{title}</a></li>' for anchor, title in sections)
    escape = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>EmoFusion report</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1040px; margin: 2em auto; color: #222; }}
table.table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
table.table th, table.table td {{ padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }}
table.table td:first-child, table.table th:first-child {{ text-align: left; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 0 1em; }}
.grid h3 {{ font-size: 1em; margin-bottom: 0; }}
</style></head><body>
<h1>EmoFusion report</h1>
<p>CNN features: <b>{escape(backbone)}</b>.{fallback}</p>
<nav><b>Contents</b><ol>{contents}</ol></nav>
<h2 id="run">What was run</h2>
<p>{len(clip_manifest)} clips used, {len(rejected_clips)} rejected.{_long_clips(clip_manifest, parameters)}
Split: <b>{escape(str(data_split_settings['split.strategy']))}</b>
({data_split['fold'].nunique()} fold(s); made with {escape(split_made_with)}).</p>
<h3>Corpora</h3>{_table(corpora)}
<h3>Emotions</h3>{_table(emotions)}
<h3>Clips per fold and subset</h3>{_table(subsets)}
<h3>Rejected clips</h3>{rejected}
<h2 id="chosen">The model chosen on validation clips</h2>
<p>In each fold, the model of best unweighted average recall on that fold's validation clips (ties to
fewer streams, then to the name), scored once on that fold's test clips; the folds pooled. No test
score chose anything. Intervals: 95% bootstrap, resampling {escape(resampled)}.</p>
{_table(chosen)}
<h2 id="streams">Does each stream help?</h2>
<p>Does the CNN stream help? The model chosen on validation clips among those with the CNN stream
against the one chosen among those without it, on the same test clips.{caveats}</p>
<ul>{verdicts}</ul>
{_stream_gains(model_summary)}
{speakers}
<h2 id="scores">Scores on the test clips</h2>{_table(scores)}
{_figure(model_comparison)}
{_corpus_scores(corpus_scores, model_summary, str(data_split_settings['split.strategy']))}
<h2 id="f1">F1 per emotion</h2>{_figure(per_class_f1)}
<h2 id="confusion">Confusion matrices</h2><div class="grid">{confusion}</div>
<h2 id="settings">Settings</h2><pre>{escape(settings)}</pre>
</body></html>
"""

"""reporting: the figures show the numbers they are given, and the HTML report holds them all and
renders in a real browser."""

import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emofusion.pipelines.reporting.nodes import (
    answers_in_words,
    confusion_matrix_figure,
    html_report,
    model_comparison_figure,
    per_class_f1_figure,
)


def metrics(counts: list[list[int]], labels: tuple[str, ...] = ("angry", "calm", "sad")) -> dict:
    counts_array = np.asarray(counts)
    with np.errstate(invalid="ignore"):  # an emotion without clips has no recall: NaN, as intended
        recall = counts_array.diagonal() / counts_array.sum(axis=1)
        precision = counts_array.diagonal() / counts_array.sum(axis=0)
        f1 = 2 * precision * recall / (precision + recall)
    return {"test_clips": int(counts_array.sum()), "folds": 1,
            "accuracy": counts_array.trace() / counts_array.sum(),
            "unweighted_average_recall": recall.mean(), "macro_f1": f1.mean(),
            "per_class": {label: {"precision": p, "recall": r, "f1": f, "support": int(s)}
                          for label, p, r, f, s in zip(labels, precision, recall, f1,
                                                       counts_array.sum(axis=1), strict=True)},
            "confusion_matrix": {"labels": list(labels), "counts": counts}}


GOOD = metrics([[8, 1, 1], [0, 5, 5], [2, 0, 18]])
POOR = metrics([[4, 3, 3], [3, 4, 3], [5, 5, 10]])
SUMMARY = pd.DataFrame({
    "variant": ["mfcc_cnn", "mfcc_cnn", "cnn", "cnn"], "classifier": ["svm", "dnn", "svm", "dnn"],
    "split": "random", "width": [86608, 86608, 86528, 86528], "folds": 1, "test_clips": 40,
    "accuracy": [0.8, 0.7, 0.5, 0.4],
    "unweighted_average_recall": [0.78, 0.69, 0.45, 0.41], "macro_f1": [0.77, 0.68, 0.44, 0.39],
    "backbone": "squeezenet_v1_1", "weights": "imagenet", "fusion": "early",
    "validation_uar": [0.74, 0.66, 0.47, 0.4],
    "chosen_on_validation": ["C 10.0; block_weights.transfer_features 0.5", "", "C 1.0", ""],
    # mfcc_cnn against cnn (mfcc alone was not trained); no model without the CNN stream
    "reference": ["cnn", "cnn", None, None], "reference_uar": [0.45, 0.41, np.nan, np.nan],
    "uar_gain": [0.33, 0.28, np.nan, np.nan], "mcnemar_p": [0.0004, 0.0213, np.nan, np.nan],
    "clips_gained": [15, 12, None, None], "clips_lost": [2, 1, None, None],
    "without_cnn": None, "without_cnn_uar": np.nan, "cnn_gain": np.nan, "cnn_mcnemar_p": np.nan,
    "speaker_normalisation": "none", "without_speaker_normalisation": None,
    "without_speaker_normalisation_uar": np.nan, "speaker_normalisation_gain": np.nan,
    "speaker_normalisation_mcnemar_p": np.nan,
    "streams": ["mfcc + transfer_features"] * 2 + ["transfer_features"] * 2,
    "unweighted_average_recall_low": [0.70, 0.6, 0.35, 0.3],
    "unweighted_average_recall_high": [0.86, 0.78, 0.55, 0.5],
    "uar_gain_low": [0.2, 0.1, np.nan, np.nan], "uar_gain_high": [0.45, 0.4, np.nan, np.nan],
    "cnn_gain_low": np.nan, "cnn_gain_high": np.nan,
    "speaker_normalisation_gain_low": np.nan, "speaker_normalisation_gain_high": np.nan})
ANSWERS = pd.DataFrame([
    {"scope": "all", "question": "chosen model", "model": "mfcc_cnn.svm",
     "accuracy": 0.8, "accuracy_low": 0.7, "accuracy_high": 0.9, "unweighted_average_recall": 0.78,
     "unweighted_average_recall_low": 0.70, "unweighted_average_recall_high": 0.86,
     "macro_f1": 0.77, "macro_f1_low": 0.69, "macro_f1_high": 0.85},
    {"scope": "all", "question": "does the CNN stream help?", "model": "mfcc_cnn.svm",
     "unweighted_average_recall": 0.78, "other": "mfcc.svm (4 of 6 folds), lpcc.svm (2)",
     "other_uar": 0.76, "gain": 0.02, "gain_low": -0.013, "gain_high": 0.051, "mcnemar_p": 0.4,
     "answer": "the data cannot tell"},
    {"scope": "svm", "question": "does per-speaker normalisation help?", "model": "mfcc_spk.svm",
     "unweighted_average_recall": 0.7, "other": "mfcc.svm", "other_uar": 0.6,
     "gain": 0.1, "gain_low": 0.05, "gain_high": 0.15, "mcnemar_p": 0.0004, "answer": "helps"}])
VARIANTS = {"cnn": ["transfer_features"], "mfcc_cnn": ["mfcc", "transfer_features"]}


def test_confusion_matrix_shows_counts_and_shares_whose_diagonal_is_recall():
    figure = confusion_matrix_figure(GOOD)
    counts, shares = (np.asarray(trace.z, dtype=float) for trace in figure.data)
    assert np.array_equal(counts, GOOD["confusion_matrix"]["counts"])
    assert np.allclose(shares.sum(axis=1), 1)
    assert np.allclose(shares.diagonal(), [GOOD["per_class"][e]["recall"] for e in ("angry", "calm", "sad")])
    assert list(figure.data[0].x) == ["angry", "calm", "sad"]
    assert "accuracy 0.775" in figure.layout.title.text  # 31 of 40


def test_an_emotion_absent_from_the_test_clips_gives_zero_shares_not_nan():
    absent = metrics([[3, 1], [0, 0]], ("a", "b")) | {"accuracy": 0.75, "unweighted_average_recall": 0.375}
    figure = confusion_matrix_figure(absent)
    assert np.array_equal(np.asarray(figure.data[1].z), [[0.75, 0.25], [0, 0]])


def test_model_comparison_has_a_bar_for_every_score_of_every_model():
    figure = model_comparison_figure(SUMMARY)
    bars = {(trace.name, trace.xaxis): dict(zip(trace.x, trace.y, strict=True)) for trace in figure.data}
    assert {name for name, _ in bars} == {"accuracy", "unweighted average recall", "macro F1"}
    values = sorted(value for bar in bars.values() for value in bar.values())
    expected = sorted(SUMMARY[["accuracy", "unweighted_average_recall", "macro_f1"]].to_numpy().ravel())
    assert np.allclose(values, expected)
    assert {note.text for note in figure.layout.annotations} == {"svm", "dnn"}
    assert list(figure.layout.xaxis.categoryarray) == ["mfcc_cnn", "cnn"]  # best first


def test_per_class_f1_puts_the_best_model_first_with_each_emotions_f1():
    figure = per_class_f1_figure(cnn__svm=POOR, mfcc_cnn__svm=GOOD)
    heatmap = figure.data[0]
    assert list(heatmap.y) == ["mfcc_cnn · svm", "cnn · svm"]
    assert np.allclose(heatmap.z[0], [GOOD["per_class"][e]["f1"] for e in heatmap.x])
    assert np.allclose(heatmap.z[1], [POOR["per_class"][e]["f1"] for e in heatmap.x])


def corpus_row(variant: str, corpus: str, uar: float, flagged: float | None) -> dict:
    """A row of corpus_scores: the same interval around every score."""
    scores = {f"{score}{end}": uar + shift for score in ("accuracy", "unweighted_average_recall", "macro_f1")
              for end, shift in (("", 0.0), ("_low", -0.05), ("_high", 0.05))}
    return {"variant": variant, "classifier": "svm", "corpus": corpus, "test_clips": 10, **scores,
            "out_of_domain": flagged}


CORPUS_SCORES = pd.DataFrame([corpus_row("cnn", "demo", 0.45, 0.1), corpus_row("mfcc_cnn", "mine", 0.3, 0.9),
                              corpus_row("mfcc_cnn", "demo", 0.78, 0.05)])


def report(rejected: pd.DataFrame | None = None, parameters: dict | None = None,
           summary: pd.DataFrame = SUMMARY, split_settings: dict | None = None,
           **summary_columns: str) -> str:
    clips = pd.DataFrame({"clip_id": [f"c{i}" for i in range(40)], "corpus": ["demo"] * 30 + ["mine"] * 10,
                          "emotion": ["angry", "calm", "sad", "sad"] * 10,
                          "speaker": [f"s{i % 4}" for i in range(40)]})
    split = pd.DataFrame({"fold": 0, "clip_id": clips["clip_id"],
                          "subset": ["train", "train", "validation", "test"] * 10})
    if rejected is None:
        rejected = pd.DataFrame({"clip_id": ["mine/broken.wav"], "corpus": ["mine"], "stage": ["audio"],
                                 "reason": ["unreadable: <not audio>"], "path": ["x"]})
    summary = pd.read_csv(io.StringIO(summary.assign(**summary_columns).to_csv(index=False)))  # as loaded
    if parameters is not None:
        clips = clips.assign(speech_duration_s=[4.2] * 3 + [2.0] * 37, kept_duration_s=[3.0] * 3 + [2.0] * 37,
                             source_clip_id=clips["clip_id"])
    split = split.assign(speaker=clips["speaker"], corpus=clips["corpus"])
    return html_report(summary, ANSWERS, CORPUS_SCORES, model_comparison_figure(summary),
                       per_class_f1_figure(cnn__svm=POOR), clips, rejected, split,
                       split_settings or {"split.strategy": "random", "split.test_size": 0.25,
                                          "split.validation_size": 0.25, "random_seed": 42},
                       {"svm": {"kind": "svm"}}, VARIANTS, parameters,
                       mfcc_cnn__svm=confusion_matrix_figure(GOOD), cnn__svm=confusion_matrix_figure(POOR))


def test_the_report_says_what_was_run_and_holds_every_figure():
    page = report()
    assert "40 clips used, 1 rejected" in page and "unreadable: &lt;not audio&gt;" in page
    assert "squeezenet_v1_1, weights: imagenet" in page and "<b>random</b>" in page
    # The split as it was made, not as this run's parameters ask.
    assert ("(1 fold(s); made with split.strategy=random, split.test_size=0.25, split.validation_size=0.25, "
            "random_seed=42)") in " ".join(page.split())
    assert page.count("Plotly.newPlot") == 4  # comparison, per-class F1, two confusion matrices
    assert "mfcc_cnn · svm" in page and "0.780" in page
    assert "chosen on validation clips" in page and "block_weights.transfer_features 0.5" in page
    assert "https://" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)  # nothing to fetch
    assert "None." in report(pd.DataFrame(columns=["clip_id", "corpus", "stage", "reason"]))


def test_the_report_names_the_backbone_asked_for_and_why_the_fallback_ran_and_lists_its_contents():
    reason = "ImageNet weights for backbone 'inception_resnet_v2' could not be downloaded (no network)"
    page = report(parameters={"audio": {"duration_s": 3.0, "crop": "centre"}, "mfcc": {"n_mfcc": 40},
                              "transfer_features": {"backbone": "inception_resnet_v2"}},
                  backbone_requested="inception_resnet_v2", fallback_reason=reason)
    top = page[:page.index('<h2 id="run"')]
    assert "Asked for inception_resnet_v2; the offline fallback squeezenet_v1_1 was used instead" in top
    assert html.escape(reason) in top
    for anchor in ("run", "chosen", "streams", "scores", "corpora", "f1", "confusion", "settings"):
        assert f'href="#{anchor}"' in top and f'<h2 id="{anchor}">' in page
    settings = page[page.index('<h2 id="settings">'):]
    assert "audio:" in settings and "n_mfcc: 40" in settings and "transfer_features:" in settings
    assert "3 clips were longer than the clip duration and were cropped (audio.crop: centre" in page
    assert "Asked for" not in report()  # no fallback, no such sentence


def test_the_report_says_first_which_model_validation_chose_and_whether_each_stream_helps():
    page = report()
    places = [page.index(f'id="{anchor}"') for anchor in ("run", "chosen", "streams", "scores")]
    assert places == sorted(places)
    chosen = page[page.index('<h2 id="chosen"'):page.index('<h2 id="streams"')]
    assert "mfcc_cnn.svm" in chosen and "0.780 (0.700 to 0.860)" in chosen and "resampling clips" in chosen
    section = page[page.index('<h2 id="streams"'):page.index('<h2 id="scores"')]
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>(.*?)</tr>", section, flags=re.S)
    assert [model for model, _ in rows] == ["mfcc_cnn · svm", "mfcc_cnn · dnn"]  # single streams have none
    cells = re.findall(r"<td>(.*?)</td>", rows[0][1])
    assert cells == ["0.780", "cnn · svm", "0.450", "+33.0", "+20.0 to +45.0", "15 / 2", "&lt; 0.001"]
    assert ("<li>all classifiers: chosen with it: mfcc_cnn.svm (UAR 0.780); without it: mfcc.svm (4 of 6 "
            "folds), lpcc.svm (2) (UAR 0.760): +2.0 points (95% interval -1.3 to +5.1), McNemar p = 0.400: "
            "the data cannot tell.</li>") in section


def test_the_report_shows_what_per_speaker_normalisation_is_worth_when_the_run_has_it():
    assert "Does per-speaker normalisation help?" not in report()
    summary = SUMMARY.copy()
    comparison = ["speaker_normalisation", "without_speaker_normalisation",
                  "without_speaker_normalisation_uar", "speaker_normalisation_gain",
                  "speaker_normalisation_gain_low", "speaker_normalisation_gain_high",
                  "speaker_normalisation_mcnemar_p"]
    summary.loc[0, comparison] = ["speaker", "mfcc_cnn_plain", 0.7, 0.08, 0.01, 0.15, 0.02]
    page = report(summary=summary)
    assert '<a href="#speakers">' in page
    section = page[page.index('<h2 id="speakers">'):page.index('<h2 id="scores">')]
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>(.*?)</tr>", section, flags=re.S)
    assert [model for model, _ in rows] == ["mfcc_cnn · svm"]
    cells = re.findall(r"<td>(.*?)</td>", rows[0][1])
    assert cells == ["0.780", "mfcc_cnn_plain · svm", "0.700", "+8.0", "+1.0 to +15.0", "0.020"]
    assert "<li>svm: chosen with it: mfcc_spk.svm (UAR 0.700)" in section and "helps.</li>" in section


def test_the_report_gives_each_corpus_s_scores_and_share_flagged_out_of_domain():
    page = report(split_settings={"split.strategy": "leave_one_corpus_out", "split.validation_size": 0.2,
                                  "random_seed": 0})
    section = page[page.index('<h2 id="corpora">'):page.index('<h2 id="f1">')]
    assert "tested by models trained on the other corpora alone" in section
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>(.*?)</tr>", section, flags=re.S)
    assert [model for model, _ in rows] == ["mfcc_cnn · svm"] * 2 + ["cnn · svm"]  # the summary's order
    cells = re.findall(r"<td>(.*?)</td>", rows[1][1])
    assert cells == ["mine", "10", "0.300 (0.250 to 0.350)", "0.300 (0.250 to 0.350)",
                     "0.300 (0.250 to 0.350)", "90.0%"]
    assert "leave one corpus out" not in report()


def test_the_answers_in_words_name_both_choices_and_the_interval():
    assert answers_in_words(ANSWERS, "does per-speaker normalisation help?") == [
        "svm: chosen with it: mfcc_spk.svm (UAR 0.700); without it: mfcc.svm (UAR 0.600): +10.0 points (95% "
        "interval +5.0 to +15.0), McNemar p < 0.001: helps."]
    assert answers_in_words(ANSWERS, "does the CNN stream help?")[0].endswith("the data cannot tell.")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_the_report_renders_every_figure_in_a_headless_browser(tmp_path: Path):
    page = tmp_path / "report.html"
    page.write_text(report())
    # Logs console messages to stderr; prints the DOM after scripts ran.
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count('class="plot-container plotly"') == 4  # plotly drew each figure
    assert result.stdout.count('class="trace bars"') == 6  # 3 scores x 2 classifiers
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Error" in line]
    assert not errors, errors

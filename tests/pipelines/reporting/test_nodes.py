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
    cnn_stream_verdicts,
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
    "speaker_normalisation_mcnemar_p": np.nan})
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


def report(rejected: pd.DataFrame | None = None, parameters: dict | None = None,
           summary: pd.DataFrame = SUMMARY, **summary_columns: str) -> str:
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
    return html_report(summary, model_comparison_figure(summary), per_class_f1_figure(cnn__svm=POOR),
                       clips, rejected, split, {"split.strategy": "random", "split.test_size": 0.25,
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
    for anchor in ("run", "streams", "scores", "f1", "confusion", "settings"):
        assert f'href="#{anchor}"' in top and f'<h2 id="{anchor}">' in page
    settings = page[page.index('<h2 id="settings">'):]
    assert "audio:" in settings and "n_mfcc: 40" in settings and "transfer_features:" in settings
    assert "3 clips were longer than the clip duration and were cropped (audio.crop: centre" in page
    assert "Asked for" not in report()  # no fallback, no such sentence


def test_the_report_says_first_whether_each_stream_helps():
    page = report()
    assert page.index('id="run"') < page.index('id="streams"') < page.index('id="scores"')
    section = page[page.index('<h2 id="streams"'):page.index('<h2 id="scores"')]
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>(.*?)</tr>", section, flags=re.S)
    assert [model for model, _ in rows] == ["mfcc_cnn · svm", "mfcc_cnn · dnn"]  # single streams have none
    cells = re.findall(r"<td>(.*?)</td>", rows[0][1])
    assert cells == ["0.780", "cnn · svm", "0.450", "+33.0", "15 / 2", "&lt; 0.001"]
    assert "<li>svm: every model uses the CNN stream" in section


def test_the_report_shows_what_per_speaker_normalisation_is_worth_when_the_run_has_it():
    assert "Does per-speaker normalisation help?" not in report()
    summary = SUMMARY.copy()
    comparison = ["speaker_normalisation", "without_speaker_normalisation",
                  "without_speaker_normalisation_uar", "speaker_normalisation_gain",
                  "speaker_normalisation_mcnemar_p"]
    summary.loc[0, comparison] = ["speaker", "mfcc_cnn_plain", 0.7, 0.08, 0.02]
    page = report(summary=summary)
    assert '<a href="#speakers">' in page
    section = page[page.index('<h2 id="speakers">'):page.index('<h2 id="scores">')]
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>(.*?)</tr>", section, flags=re.S)
    assert [model for model, _ in rows] == ["mfcc_cnn · svm"]
    cells = re.findall(r"<td>(.*?)</td>", rows[0][1])
    assert cells == ["0.780", "mfcc_cnn_plain · svm", "0.700", "+8.0", "0.020"]


def summary_of(rows: list[tuple[str, str, float, str | None, float, float]]) -> pd.DataFrame:
    """(variant, classifier, UAR, without_cnn, its UAR, McNemar p) per model."""
    summary = pd.DataFrame(rows, columns=["variant", "classifier", "unweighted_average_recall", "without_cnn",
                                          "without_cnn_uar", "cnn_mcnemar_p"])
    return summary.assign(cnn_gain=summary["unweighted_average_recall"] - summary["without_cnn_uar"],
                          test_clips=435, weights="imagenet")


def test_the_cnn_verdict_compares_the_best_model_with_and_without_the_cnn_stream():
    variants = {"mfcc": ["mfcc"], "mfcc_lpcc": ["mfcc", "lpcc"], "cnn": ["transfer_features"],
                "mfcc_cnn": {"fusion": "late", "streams": ["mfcc", "transfer_features"]}, "off": None}
    summary = summary_of([
        ("mfcc_cnn", "svm", 0.80, "mfcc_lpcc", 0.70, 0.012), ("cnn", "svm", 0.60, "mfcc_lpcc", 0.70, 0.2),
        ("mfcc_lpcc", "svm", 0.70, None, np.nan, np.nan), ("mfcc", "svm", 0.65, None, np.nan, np.nan),
        ("mfcc_cnn", "dnn", 0.72, "mfcc", 0.70, 0.4), ("mfcc", "dnn", 0.70, None, np.nan, np.nan),
        ("mfcc_cnn", "knn", 0.50, "mfcc", 0.60, 0.0001), ("mfcc", "knn", 0.60, None, np.nan, np.nan),
        ("mfcc", "tree", 0.5, None, np.nan, np.nan), ("cnn", "forest", 0.5, None, np.nan, np.nan)])
    assert cnn_stream_verdicts(summary, variants) == [
        "svm: best model using the CNN stream: mfcc_cnn (UAR 0.800) vs best without it: mfcc_lpcc "
        "(UAR 0.700): +10.0 points, McNemar p = 0.012. The CNN stream helps.",
        "dnn: best model using the CNN stream: mfcc_cnn (UAR 0.720) vs best without it: mfcc (UAR 0.700): "
        "+2.0 points, McNemar p = 0.400. Better, but not significantly (p ≥ 0.05): these test clips do not "
        "show that the CNN stream helps.",
        "knn: best model using the CNN stream: mfcc_cnn (UAR 0.500) vs best without it: mfcc (UAR 0.600): "
        "-10.0 points, McNemar p < 0.001. The CNN stream does not help.",
        "tree: no model uses the CNN stream.",
        "forest: every model uses the CNN stream, so there is no model without it to compare with."]


def test_the_cnn_verdict_says_why_the_stream_may_not_help_here():
    summary = summary_of([("mfcc_cnn", "svm", 0.6, "mfcc", 0.7, 0.3),
                          ("mfcc", "svm", 0.7, None, np.nan, np.nan)])
    summary = summary.assign(test_clips=32, weights="random initialisation (not pretrained)")
    variants = {"mfcc": ["mfcc"], "mfcc_cnn": ["mfcc", "transfer_features"]}
    (verdict,) = cnn_stream_verdicts(summary, variants)
    assert verdict.endswith(
        "The CNN stream does not help. Its CNN has random weights (transfer_features.weights: none), so "
        "its features are random projections of the spectrograms, not what ImageNet taught the network. "
        "With 32 test clips, a few clips decide the difference.")


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

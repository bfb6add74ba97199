"""Corpus readers on tiny generated trees, one per naming scheme, and the manifest node."""

import logging
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from emofusion.errors import CorpusError
from emofusion.pipelines.data_processing.corpora import (
    CLIP_COLUMNS,
    NAME_PARSERS,
    REJECTION_COLUMNS,
    list_audio,
    scan_corpus,
)
from emofusion.pipelines.data_processing.nodes import build_corpus_manifest

SR = 8000


@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory):
    """One tiny real WAV (0.1 s of a tone); every clip in these trees is a copy of it."""
    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    t = np.arange(int(0.1 * SR)) / SR
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR, subtype="PCM_16")
    return path.read_bytes()


@pytest.fixture
def make_tree(wav_bytes):
    """Write the given relative paths (audio as real WAVs, anything else as text) under root."""

    def make(root: Path, relatives) -> Path:
        for relative in relatives:
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.suffix.lower() == ".wav":
                target.write_bytes(wav_bytes)
            else:
                target.write_text("not audio\n")
        return root

    return make


def build(parameters, corpora, sources, *, emotions=None, seed=42, split_strategy="random"):
    """build_corpus_manifest with the real label maps and vocabulary."""
    return build_corpus_manifest(
        split_strategy=split_strategy,
        corpora=corpora,
        corpus_sources=sources,
        label_maps=parameters["label_maps"],
        emotion_vocabulary=parameters["emotion_vocabulary"],
        emotions=parameters["emotions"] if emotions is None else emotions,
        demo_corpus_options=parameters["demo_corpus"],
        random_seed=seed,
    )


def by_name(clips: pd.DataFrame) -> dict[str, dict]:
    return {Path(p).name: row for p, row in zip(clips["path"], clips.to_dict("records"), strict=True)}


# --- one test per naming scheme -------------------------------------------------------------


def test_ravdess_fields_and_label_map(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "ravdess", [
        "Actor_01/03-01-05-02-01-01-01.wav",
        "Actor_02/03-01-03-01-02-02-02.wav",
    ])
    clips, rejected = scan_corpus("ravdess", {"reader": "ravdess", "path": str(root)})
    assert rejected.empty
    assert list(rejected.columns) == REJECTION_COLUMNS
    rows = by_name(clips)
    first = rows["03-01-05-02-01-01-01.wav"]
    assert first["source_label"] == "05"
    assert parameters["label_maps"]["ravdess"][first["source_label"]] == "angry"
    assert first["speaker"] == "ravdess:01"
    assert first["gender"] == "male"
    assert first["statement"] == "01"
    assert first["clip_id"] == "ravdess/Actor_01/03-01-05-02-01-01-01"
    assert first["corpus"] == "ravdess"
    assert Path(first["path"]) == root / "Actor_01" / "03-01-05-02-01-01-01.wav"
    second = rows["03-01-03-01-02-02-02.wav"]
    assert second["speaker"] == "ravdess:02"
    assert second["gender"] == "female"
    assert second["statement"] == "02"

    manifest, _ = build(parameters, ["ravdess"], {"ravdess": {"reader": "ravdess", "path": str(root)}})
    assert list(manifest.columns) == CLIP_COLUMNS
    assert dict(zip(manifest["clip_id"], manifest["emotion"], strict=True)) == {
        "ravdess/Actor_01/03-01-05-02-01-01-01": "angry",
        "ravdess/Actor_02/03-01-03-01-02-02-02": "happy",
    }


def test_ravdess_odd_and_even_actors_give_gender():
    parse = NAME_PARSERS["ravdess"]
    assert parse(PurePosixPath("Actor_23/03-01-01-01-01-01-23.wav"))["gender"] == "male"
    assert parse(PurePosixPath("Actor_24/03-01-01-01-01-01-24.wav"))["gender"] == "female"


CREMA_FILES = ["1001_DFA_ANG_XX.wav", "1002_IEO_HAP_HI.wav", "1003_TIE_SAD_LO.wav"]


def test_crema_d_with_demographics_gives_gender(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "crema_d", CREMA_FILES)
    pd.DataFrame({"ActorID": ["1001", "1002", "1003"], "Sex": ["Male", "Female", "Male"],
                  "Age": [51, 21, 33]}).to_csv(root / "VideoDemographics.csv", index=False)
    clips, rejected = scan_corpus("crema_d", {"reader": "crema_d", "path": str(root)})
    assert rejected.empty
    rows = by_name(clips)
    assert rows["1001_DFA_ANG_XX.wav"]["speaker"] == "crema_d:1001"
    assert rows["1001_DFA_ANG_XX.wav"]["statement"] == "DFA"
    assert rows["1001_DFA_ANG_XX.wav"]["source_label"] == "ANG"
    assert parameters["label_maps"]["crema_d"]["ANG"] == "angry"
    assert {name: row["gender"] for name, row in rows.items()} == {
        "1001_DFA_ANG_XX.wav": "male", "1002_IEO_HAP_HI.wav": "female", "1003_TIE_SAD_LO.wav": "male",
    }


def test_crema_d_demographics_in_parent_folder(tmp_path, make_tree):
    root = make_tree(tmp_path / "crema" / "AudioWAV", CREMA_FILES[:1])
    pd.DataFrame({"ActorID": ["1001"], "Sex": ["Female"]}).to_csv(
        tmp_path / "crema" / "VideoDemographics.csv", index=False)
    clips, _ = scan_corpus("crema_d", {"reader": "crema_d", "path": str(root)})
    assert clips["gender"].tolist() == ["female"]


def test_crema_d_without_demographics_has_no_gender(tmp_path, make_tree):
    root = make_tree(tmp_path / "crema_d", CREMA_FILES)
    clips, rejected = scan_corpus("crema_d", {"reader": "crema_d", "path": str(root)})
    assert rejected.empty
    assert len(clips) == 3
    assert clips["gender"].isna().all()
    assert clips["speaker"].notna().all()


def test_savee_flat_names(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "savee", ["DC_sa01.wav", "DC_su02.wav", "JE_a03.wav", "KL_n01.wav"])
    clips, rejected = scan_corpus("savee", {"reader": "savee", "path": str(root)})
    assert rejected.empty
    rows = by_name(clips)
    labels = {name: row["source_label"] for name, row in rows.items()}
    assert labels == {"DC_sa01.wav": "sa", "DC_su02.wav": "su", "JE_a03.wav": "a", "KL_n01.wav": "n"}
    mapping = parameters["label_maps"]["savee"]
    assert [mapping[labels[n]] for n in ["DC_sa01.wav", "DC_su02.wav", "JE_a03.wav"]] == [
        "sad", "surprised", "angry"]
    assert rows["DC_sa01.wav"]["speaker"] == "savee:DC"
    assert rows["JE_a03.wav"]["speaker"] == "savee:JE"
    assert set(clips["gender"]) == {"male"}


def test_savee_nested_names(tmp_path, make_tree):
    root = make_tree(tmp_path / "savee", ["DC/su01.wav", "DC/sa02.wav", "JK/h05.wav", "JK/s01.wav"])
    clips, rejected = scan_corpus("savee", {"reader": "savee", "path": str(root)})
    rows = by_name(clips)
    assert {name: row["source_label"] for name, row in rows.items()} == {
        "su01.wav": "su", "sa02.wav": "sa", "h05.wav": "h"}
    assert rows["su01.wav"]["speaker"] == "savee:DC"
    assert rows["h05.wav"]["speaker"] == "savee:JK"
    # A bare "s" is not a SAVEE emotion code (only sa and su are).
    assert len(rejected) == 1
    assert rejected["path"].iloc[0].endswith("s01.wav")
    assert rejected["stage"].iloc[0] == "scan"
    assert "SAVEE" in rejected["reason"].iloc[0]


def test_savee_nested_name_outside_speaker_folder_is_rejected(tmp_path, make_tree):
    root = make_tree(tmp_path / "savee", ["DC/a01.wav", "a02.wav", "lower/a03.wav"])
    clips, rejected = scan_corpus("savee", {"reader": "savee", "path": str(root)})
    assert clips["clip_id"].tolist() == ["savee/DC/a01"]
    assert sorted(rejected["clip_id"]) == ["savee/a02", "savee/lower/a03"]


def test_tess_names(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "tess", [
        "OAF_angry/OAF_back_angry.wav",
        "YAF_pleasant_surprised/YAF_dog_ps.wav",
        "YAF_fear/YAF_bean_fear.wav",
    ])
    clips, rejected = scan_corpus("tess", {"reader": "tess", "path": str(root)})
    assert rejected.empty
    rows = by_name(clips)
    assert rows["OAF_back_angry.wav"]["source_label"] == "angry"
    assert rows["OAF_back_angry.wav"]["speaker"] == "tess:OAF"
    assert rows["OAF_back_angry.wav"]["statement"] == "back"
    assert rows["YAF_dog_ps.wav"]["speaker"] == "tess:YAF"
    assert set(clips["gender"]) == {"female"}

    manifest, _ = build(parameters, ["tess"], {"tess": {"reader": "tess", "path": str(root)}})
    emotions = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["emotion"], strict=True))
    assert emotions == {"OAF_back_angry.wav": "angry", "YAF_dog_ps.wav": "surprised",
                        "YAF_bean_fear.wav": "fearful"}


def test_emodb_names(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "emodb", ["wav/03a01Fa.wav", "wav/08a01Wa.wav"])
    clips, rejected = scan_corpus("emodb", {"reader": "emodb", "path": str(root)})
    assert rejected.empty
    rows = by_name(clips)
    happy, angry = rows["03a01Fa.wav"], rows["08a01Wa.wav"]
    assert (happy["speaker"], happy["gender"], happy["statement"]) == ("emodb:03", "male", "a01")
    assert (angry["speaker"], angry["gender"]) == ("emodb:08", "female")

    manifest, _ = build(parameters, ["emodb"], {"emodb": {"reader": "emodb", "path": str(root)}})
    emotions = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["emotion"], strict=True))
    assert emotions == {"03a01Fa.wav": "happy", "08a01Wa.wav": "angry"}


def test_folder_names(tmp_path, make_tree):
    root = make_tree(tmp_path / "mine", ["angry/a.wav", "sad/spk1/b.wav", "loose.wav"])
    clips, rejected = scan_corpus("mine", {"reader": "folder", "path": str(root)})
    rows = by_name(clips)
    assert rows["a.wav"]["source_label"] == "angry"
    assert pd.isna(rows["a.wav"]["speaker"])
    assert rows["b.wav"]["source_label"] == "sad"
    assert rows["b.wav"]["speaker"] == "mine:spk1"
    assert rows["b.wav"]["clip_id"] == "mine/sad/spk1/b"
    assert rejected["clip_id"].tolist() == ["mine/loose"]
    assert rejected["reason"].iloc[0] == "file is not inside a label folder"


URDU_PATTERN = r"^(?P<speaker>S(?P<gender>[MF])\d+)_"


def test_speaker_pattern_reads_urdu_style_speakers_and_genders(tmp_path, make_tree, caplog):
    names = ["Angry/SM1_F10_A010.wav", "Happy/SM1_F11_H001.wav", "Sad/SF12_F2_S007.wav",
             "Neutral/SM27_F1_N100.wav"]
    root = make_tree(tmp_path / "urdu", names)
    with caplog.at_level(logging.INFO):
        clips, rejected = scan_corpus("urdu", {"reader": "folder", "path": str(root),
                                               "speaker_pattern": URDU_PATTERN})
    rows = by_name(clips)
    assert rejected.empty
    assert {name: (row["speaker"], row["gender"]) for name, row in rows.items()} == {
        "SM1_F10_A010.wav": ("urdu:SM1", "male"), "SM1_F11_H001.wav": ("urdu:SM1", "male"),
        "SF12_F2_S007.wav": ("urdu:SF12", "female"), "SM27_F1_N100.wav": ("urdu:SM27", "male")}
    assert rows["SM1_F10_A010.wav"]["source_label"] == "Angry"
    assert "speaker_pattern found the speaker of 4 of 4 clips (3 speakers)" in caplog.text


def test_speaker_pattern_misses_are_kept_or_rejected_by_what_the_split_needs(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "mine", ["angry/spk012_utt0042.wav", "sad/spk007_utt0001.wav",
                                         "sad/intro.wav"])
    source = {"reader": "folder", "path": str(root), "speaker_pattern": r"^spk(?P<speaker>\d+)_"}
    clips, rejected = scan_corpus("mine", source)
    assert rejected.empty
    assert by_name(clips)["spk012_utt0042.wav"]["speaker"] == "mine:012"
    assert pd.isna(by_name(clips)["intro.wav"]["speaker"])
    manifest, rejections = build(parameters, ["mine"], {"mine": source},
                                 split_strategy="speaker_independent")
    assert sorted(map(lambda p: Path(p).name, manifest["path"])) == ["spk007_utt0001.wav",
                                                                      "spk012_utt0042.wav"]
    assert rejections["clip_id"].tolist() == ["mine/sad/intro"]
    assert "does not match speaker_pattern '^spk(?P<speaker>\\d+)_'" in rejections["reason"].iloc[0]


def test_speaker_pattern_reads_csv_file_names(tmp_path, make_tree):
    root = make_tree(tmp_path / "data", ["clips/spk3_a.wav"])
    (root / "m.csv").write_text("path,label,speaker\nclips/spk3_a.wav,angry,\n")
    clips, _ = scan_corpus("m", {"reader": "csv", "path": str(root / "m.csv"),
                                 "speaker_pattern": r"(?P<speaker>spk\d+)"})
    assert clips["speaker"].tolist() == ["m:spk3"]


@pytest.mark.parametrize(("reader", "pattern", "message"), [
    ("folder", "(?P<speaker>[", "is not a regular expression"),
    ("folder", r"^spk\d+", "has no named group 'speaker'"),
    ("ravdess", r"(?P<speaker>\d+)", "only the folder and csv readers take a speaker pattern"),
    ("folder", r"^nobody(?P<speaker>\d+)", "matches none of its 1 file names (first: 'spk1_a')"),
])
def test_a_speaker_pattern_that_cannot_give_speakers_is_refused(tmp_path, make_tree, reader, pattern,
                                                                message):
    root = make_tree(tmp_path / "mine", ["angry/spk1_a.wav"])
    with pytest.raises(CorpusError, match=re.escape(message)):
        scan_corpus("mine", {"reader": reader, "path": str(root), "speaker_pattern": pattern})


def test_csv_manifest(tmp_path, make_tree):
    root = make_tree(tmp_path / "data", ["clips/one.wav", "clips/two.wav"])
    manifest_file = root / "list.csv"
    pd.DataFrame({
        "path": ["clips/one.wav", "clips/two.wav", "clips/gone.wav"],
        "label": ["angry", "sad", "happy"],
        "speaker": ["alice", "", "carol"],
    }).to_csv(manifest_file, index=False)
    clips, rejected = scan_corpus("mine", {"reader": "csv", "path": str(manifest_file)})
    assert clips["clip_id"].tolist() == ["mine/clips/one", "mine/clips/two"]
    assert [Path(p) for p in clips["path"]] == [root / "clips/one.wav", root / "clips/two.wav"]
    assert clips["source_label"].tolist() == ["angry", "sad"]
    assert clips["speaker"].iloc[0] == "mine:alice"
    assert pd.isna(clips["speaker"].iloc[1])
    assert clips["gender"].isna().all()
    assert rejected["clip_id"].tolist() == ["mine/clips/gone"]
    assert rejected["stage"].tolist() == ["scan"]
    assert "not found" in rejected["reason"].iloc[0]


def test_csv_manifest_without_speaker_column(tmp_path, make_tree):
    root = make_tree(tmp_path / "data", ["a.wav"])
    (root / "m.csv").write_text("path,label\na.wav,neutral\n")
    clips, rejected = scan_corpus("m", {"reader": "csv", "path": str(root / "m.csv")})
    assert rejected.empty
    assert clips["source_label"].tolist() == ["neutral"]
    assert clips["speaker"].isna().all()


def test_csv_manifest_missing_columns_raises(tmp_path):
    (tmp_path / "m.csv").write_text("file,emotion\na.wav,neutral\n")
    with pytest.raises(CorpusError, match="lacks column"):
        scan_corpus("m", {"reader": "csv", "path": str(tmp_path / "m.csv")})


# --- rejections and errors --------------------------------------------------------------------


def test_stray_files_are_rejections_and_non_audio_is_ignored(tmp_path, make_tree, caplog):
    root = make_tree(tmp_path / "ravdess", [
        "Actor_01/03-01-05-02-01-01-01.wav",
        "Actor_01/03-01-05-02-01-01-01 (copy).wav",
        "Actor_01/notes.wav",
        "README.txt",
        "Actor_01/info.csv",
    ])
    with caplog.at_level("INFO"):
        clips, rejected = scan_corpus("ravdess", {"reader": "ravdess", "path": str(root)})
    assert "skipped 2 files that are not audio" in caplog.text
    assert "'.txt': 1" in caplog.text and "'.csv': 1" in caplog.text
    assert len(clips) == 1
    assert len(rejected) == 2
    assert set(rejected["stage"]) == {"scan"}
    assert all("RAVDESS" in reason for reason in rejected["reason"])
    assert not any(p.endswith((".txt", ".csv")) for p in list(clips["path"]) + list(rejected["path"]))


def test_missing_folder_raises_with_folder_and_hint(tmp_path):
    missing = tmp_path / "nowhere" / "ravdess"
    with pytest.raises(CorpusError) as info:
        scan_corpus("ravdess", {"reader": "ravdess", "path": str(missing)})
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "zenodo" in message  # where to download it
    assert "corpus_sources.ravdess.path" in message  # how to point at it


def test_missing_csv_manifest_raises(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        scan_corpus("m", {"reader": "csv", "path": str(tmp_path / "nope.csv")})


def test_folder_without_audio_raises(tmp_path, make_tree):
    root = make_tree(tmp_path / "tess", ["README.txt"])
    with pytest.raises(CorpusError, match="no audio files"):
        scan_corpus("tess", {"reader": "tess", "path": str(root)})


def test_mislabelled_corpus_raises(tmp_path, make_tree):
    root = make_tree(tmp_path / "ravdess", CREMA_FILES)
    with pytest.raises(CorpusError) as info:
        scan_corpus("ravdess", {"reader": "ravdess", "path": str(root)})
    message = str(info.value)
    assert "none of the 3 audio files" in message
    assert "1001_DFA_ANG_XX.wav" in message
    assert "corpus_sources.ravdess.reader" in message


def test_unknown_reader_raises(tmp_path):
    with pytest.raises(CorpusError, match="unknown reader 'iemocap'"):
        scan_corpus("x", {"reader": "iemocap", "path": str(tmp_path)})


def test_unknown_corpus_name_raises(parameters):
    with pytest.raises(CorpusError, match="not defined"):
        build(parameters, ["nope"], {})


# --- build_corpus_manifest --------------------------------------------------------------------


def test_build_combines_two_corpora(tmp_path, make_tree, parameters):
    ravdess = make_tree(tmp_path / "ravdess", ["Actor_01/03-01-05-02-01-01-01.wav",
                                               "Actor_01/03-01-04-02-01-01-01.wav"])
    emodb = make_tree(tmp_path / "emodb", ["03a01Fa.wav", "08a01Wa.wav", "08a02La.wav", "bad.wav"])
    sources = {"ravdess": {"reader": "ravdess", "path": str(ravdess)},
               "emodb": {"reader": "emodb", "path": str(emodb)}}
    manifest, rejected = build(parameters, ["ravdess", "emodb"], sources)
    assert list(manifest.columns) == CLIP_COLUMNS
    assert manifest["clip_id"].is_monotonic_increasing
    assert manifest["corpus"].value_counts().to_dict() == {"ravdess": 2, "emodb": 2}
    assert sorted(manifest["emotion"]) == ["angry", "angry", "happy", "sad"]
    assert set(manifest["speaker"]) == {"ravdess:01", "emodb:03", "emodb:08"}
    # boredom (L) is in the vocabulary but not in the selected emotions: left out, not rejected.
    assert "emodb/08a02La" not in set(manifest["clip_id"]) | set(rejected["clip_id"])
    assert rejected["clip_id"].tolist() == ["emodb/bad"]
    assert list(rejected.columns) == REJECTION_COLUMNS


def test_speakers_prefixed_by_corpus_keep_same_ids_apart(tmp_path, make_tree, parameters):
    a = make_tree(tmp_path / "a", ["angry/spk1/x.wav"])
    b = make_tree(tmp_path / "b", ["angry/spk1/x.wav"])
    manifest, _ = build(parameters, ["a", "b"], {"a": {"reader": "folder", "path": str(a)},
                                             "b": {"reader": "folder", "path": str(b)}})
    assert manifest["speaker"].tolist() == ["a:spk1", "b:spk1"]
    assert manifest["clip_id"].tolist() == ["a/angry/spk1/x", "b/angry/spk1/x"]


def test_folder_unknown_labels_are_rejected_with_reason(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "mine", ["angry/a.wav", "Sad/b.wav", "excited/c.wav"])
    manifest, rejected = build(parameters, ["mine"], {"mine": {"reader": "folder", "path": str(root)}})
    assert dict(zip(manifest["clip_id"], manifest["emotion"], strict=True)) == {
        "mine/angry/a": "angry", "mine/Sad/b": "sad"}
    assert rejected["clip_id"].tolist() == ["mine/excited/c"]
    assert rejected["stage"].tolist() == ["label"]
    assert "'excited'" in rejected["reason"].iloc[0]
    assert "label_map" in rejected["reason"].iloc[0]


def test_folder_with_own_label_map(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "mine", ["anger/a.wav", "joy/b.wav"])
    source = {"reader": "folder", "path": str(root), "label_map": {"anger": "angry", "joy": "happy"}}
    manifest, rejected = build(parameters, ["mine"], {"mine": source})
    assert sorted(manifest["emotion"]) == ["angry", "happy"]
    assert rejected.empty


def test_emotions_that_select_nothing_raise(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "crema_d", CREMA_FILES)
    with pytest.raises(CorpusError, match="No clips selected"):
        build(parameters, ["crema_d"], {"crema_d": {"reader": "crema_d", "path": str(root)}},
              emotions=["calm"])


def test_emotions_outside_vocabulary_raise(tmp_path, make_tree, parameters):
    root = make_tree(tmp_path / "crema_d", CREMA_FILES)
    with pytest.raises(CorpusError, match="not in emotion_vocabulary"):
        build(parameters, ["crema_d"], {"crema_d": {"reader": "crema_d", "path": str(root)}},
              emotions=["bored"])


@pytest.fixture
def crema_tree(tmp_path, make_tree):
    """20 clips of each of four emotions."""
    names = [f"{1001 + i}_DFA_{code}_XX.wav" for code in ["ANG", "SAD", "HAP", "NEU"] for i in range(20)]
    return make_tree(tmp_path / "crema_d", names)


def test_sample_fraction_is_stratified_and_reproducible(crema_tree, parameters):
    full, _ = build(parameters, ["crema_d"], {"crema_d": {"reader": "crema_d", "path": str(crema_tree)}})
    assert full["emotion"].value_counts().to_dict() == {e: 20 for e in ["angry", "sad", "happy",
                                                                        "neutral"]}
    sources = {"crema_d": {"reader": "crema_d", "path": str(crema_tree), "sample_fraction": 0.25}}
    first, _ = build(parameters, ["crema_d"], sources, seed=1)
    again, _ = build(parameters, ["crema_d"], sources, seed=1)
    other, _ = build(parameters, ["crema_d"], sources, seed=2)
    assert first["emotion"].value_counts().to_dict() == {e: 5 for e in ["angry", "sad", "happy",
                                                                        "neutral"]}
    pd.testing.assert_frame_equal(first, again)
    assert set(first["clip_id"]) <= set(full["clip_id"])
    assert set(other["clip_id"]) != set(first["clip_id"])


def test_sample_fraction_out_of_range_raises(crema_tree, parameters):
    sources = {"crema_d": {"reader": "crema_d", "path": str(crema_tree), "sample_fraction": 1.5}}
    with pytest.raises(CorpusError, match="sample_fraction"):
        build(parameters, ["crema_d"], sources)


def test_same_clip_in_two_formats_is_rejected_once(tmp_path, make_tree):
    root = make_tree(tmp_path / "mine", ["angry/a.wav"])
    (root / "angry" / "a.flac").write_bytes((root / "angry" / "a.wav").read_bytes())
    clips, rejections = scan_corpus("mine", {"reader": "folder", "path": str(root)})
    assert clips["clip_id"].tolist() == ["mine/angry/a"]
    assert rejections["clip_id"].tolist() == ["mine/angry/a"]
    assert "different extension" in rejections["reason"].iloc[0]


def test_csv_manifest_with_absolute_paths_gives_clean_ids(tmp_path, make_tree):
    audio = make_tree(tmp_path / "elsewhere", ["x/clip.wav"]) / "x" / "clip.wav"
    manifest = tmp_path / "list.csv"
    pd.DataFrame({"path": [str(audio)], "label": ["angry"]}).to_csv(manifest, index=False)
    clips, rejected = scan_corpus("mine", {"reader": "csv", "path": str(manifest)})
    assert rejected.empty
    assert clips["clip_id"].tolist() == [f"mine/{str(audio.with_suffix('')).lstrip('/')}"]
    assert "//" not in clips["clip_id"].iloc[0]


def test_crema_d_demographics_without_sex_column_raises(tmp_path, make_tree):
    root = make_tree(tmp_path / "crema_d", CREMA_FILES)
    pd.DataFrame({"ActorID": ["1001"], "Age": [51]}).to_csv(root / "VideoDemographics.csv",
                                                          index=False)
    with pytest.raises(CorpusError, match="needs columns ActorID and Sex"):
        scan_corpus("crema_d", {"reader": "crema_d", "path": str(root)})


def test_links_that_lead_nowhere_are_counted_not_lost(tmp_path, caplog):
    (tmp_path / "angry").mkdir()
    (tmp_path / "angry" / "a.wav").write_bytes(b"")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "angry" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        assert [str(path) for path in list_audio("mine", tmp_path)] == ["angry/a.wav"]
    assert "Corpus 'mine': skipped 3 links that lead nowhere (broken, or a loop of links)" in caplog.text

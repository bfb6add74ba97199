"""Corpus readers: a folder (or CSV manifest) of clips becomes a table of clips with their labels.

Each naming scheme has a parser from a clip's path (relative to the corpus folder) to its source
label, speaker, gender and statement. A name that does not fit the scheme is a rejection with a
reason, not an exception, so one stray file does not stop a run over thousands.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from emofusion.errors import CorpusError

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"})

CLIP_COLUMNS = ["clip_id", "corpus", "path", "emotion", "source_label", "speaker", "gender",
                "statement"]
REJECTION_COLUMNS = ["clip_id", "corpus", "path", "stage", "reason"]

DOWNLOAD_HINTS = {
    "ravdess": "Download the RAVDESS speech audio (Audio_Speech_Actors_01-24.zip) from "
    "https://zenodo.org/records/1188976 and unpack it so that the folder holds Actor_01 ... Actor_24.",
    "crema_d": "Download CREMA-D's AudioWAV folder (and VideoDemographics.csv for genders) from "
    "https://github.com/CheyneyComputerScience/CREMA-D and put the .wav files in the folder.",
    "savee": "Request SAVEE from http://kahlan.eps.surrey.ac.uk/savee/ and unpack the AudioData "
    "folder (DC/, JE/, JK/, KL/ with a01.wav ... or flat DC_a01.wav names).",
    "tess": "Download TESS from https://tspace.library.utoronto.ca/handle/1807/24487 and unpack it "
    "(files named like OAF_back_angry.wav, in any sub-folders).",
    "emodb": "Download EMO-DB (download.zip) from http://emodb.bilderbar.info/download/ and put its "
    "wav/ folder there (files named like 03a01Fa.wav).",
    "folder": "Put one sub-folder per emotion label (optionally with one sub-folder per speaker "
    "inside) holding the audio files.",
    "csv": "Point the path at a CSV file with columns path, label and optionally speaker, gender.",
}


def _ravdess(path: PurePosixPath) -> dict[str, Any]:
    match = re.fullmatch(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)", path.stem)
    if not match:
        raise ValueError("name does not match the RAVDESS scheme MM-VV-EE-II-SS-RR-AA")
    _, _, emotion, _, statement, _, actor = match.groups()
    return {
        "source_label": emotion,
        "speaker": actor,
        "gender": "male" if int(actor) % 2 else "female",
        "statement": statement,
    }


def _crema_d(path: PurePosixPath) -> dict[str, Any]:
    match = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", path.stem)
    if not match:
        raise ValueError("name does not match the CREMA-D scheme 1001_DFA_ANG_XX")
    actor, sentence, emotion, _ = match.groups()
    return {"source_label": emotion, "speaker": actor, "gender": None, "statement": sentence}


def _savee(path: PurePosixPath) -> dict[str, Any]:
    # Either DC_a01.wav or DC/a01.wav; all four SAVEE speakers are male.
    flat = re.fullmatch(r"([A-Z]{2})_(a|d|f|h|n|sa|su)(\d\d)", path.stem)
    nested = re.fullmatch(r"(a|d|f|h|n|sa|su)(\d\d)", path.stem)
    if flat:
        speaker, emotion, _ = flat.groups()
    elif nested and len(path.parts) >= 2 and re.fullmatch(r"[A-Z]{2}", path.parts[-2]):
        speaker, (emotion, _) = path.parts[-2], nested.groups()
    else:
        raise ValueError("name does not match the SAVEE scheme DC_a01 or DC/a01")
    return {"source_label": emotion, "speaker": speaker, "gender": "male", "statement": None}


def _tess(path: PurePosixPath) -> dict[str, Any]:
    match = re.fullmatch(r"([A-Za-z]+)_([A-Za-z]+)_([A-Za-z_]+)", path.stem)
    if not match:
        raise ValueError("name does not match the TESS scheme OAF_word_emotion")
    speaker, word, emotion = match.groups()
    # Both TESS speakers are women.
    return {"source_label": emotion.lower(), "speaker": speaker.upper(), "gender": "female",
            "statement": word.lower()}


EMODB_MALE_SPEAKERS = frozenset({"03", "10", "11", "12", "15"})


def _emodb(path: PurePosixPath) -> dict[str, Any]:
    match = re.fullmatch(r"(\d\d)([ab]\d\d)([A-Z])([a-z])", path.stem)
    if not match:
        raise ValueError("name does not match the EMO-DB scheme 03a01Fa")
    speaker, text, emotion, _ = match.groups()
    gender = "male" if speaker in EMODB_MALE_SPEAKERS else "female"
    return {"source_label": emotion, "speaker": speaker, "gender": gender, "statement": text}


def _folder(path: PurePosixPath) -> dict[str, Any]:
    # <label>/<file> or <label>/<speaker>/<file>
    if len(path.parts) < 2:
        raise ValueError("file is not inside a label folder")
    speaker = path.parts[1] if len(path.parts) >= 3 else None
    return {"source_label": path.parts[0], "speaker": speaker, "gender": None, "statement": None}


NAME_PARSERS: dict[str, Callable[[PurePosixPath], dict[str, Any]]] = {
    "ravdess": _ravdess,
    "crema_d": _crema_d,
    "savee": _savee,
    "tess": _tess,
    "emodb": _emodb,
    "folder": _folder,
}
READERS = frozenset(NAME_PARSERS) | {"csv", "demo"}
# The readers whose speakers may come from the file name: the others' schemes already say them.
SPEAKER_PATTERN_READERS = ("folder", "csv")
GENDER_SPELLINGS = {"m": "male", "male": "male", "f": "female", "female": "female"}


def compile_speaker_pattern(corpus: str, source: Mapping[str, Any]) -> re.Pattern | None:
    """The corpus's `speaker_pattern`, compiled; a pattern that cannot give speakers is refused
    before anything runs, rather than leaving every clip without a speaker."""
    pattern = source.get("speaker_pattern")
    if pattern is None:
        return None
    where = f"corpus_sources.{corpus}.speaker_pattern"
    if source.get("reader") not in SPEAKER_PATTERN_READERS:
        raise CorpusError(f"{where}: only the {' and '.join(SPEAKER_PATTERN_READERS)} readers take a "
                          f"speaker pattern; the '{source.get('reader')}' reader reads speakers from its "
                          "own naming scheme")
    try:
        compiled = re.compile(str(pattern))
    except re.error as error:
        raise CorpusError(f"{where}: '{pattern}' is not a regular expression ({error})") from None
    if "speaker" not in compiled.groupindex:
        raise CorpusError(f"{where}: '{pattern}' has no named group 'speaker', e.g. "
                          r"'^(?P<speaker>S(?P<gender>[MF])\d+)_' for SM1_F10_A010.wav")
    return compiled


def _speakers_from_names(corpus: str, clips: list[dict], pattern: re.Pattern, speakers_required: bool
                         ) -> tuple[list[dict], list[dict]]:
    """Speaker (and gender, given a `gender` group: M/F or male/female) from each file name without
    its extension. A name the pattern misses keeps no speaker, or is rejected when the split keeps
    speakers apart and so cannot place it."""
    kept, rejected = [], []
    for clip in clips:
        match = pattern.search(PurePosixPath(clip["path"]).stem)
        if match and match.group("speaker"):
            gender = match.groupdict().get("gender")
            kept.append(clip | {"speaker": match.group("speaker"),
                                "gender": GENDER_SPELLINGS.get(gender.lower(), gender.lower())
                                if gender else clip["gender"]})
        elif speakers_required:
            rejected.append({key: clip[key] for key in ("clip_id", "corpus", "path")} | {
                "stage": "scan", "reason": f"file name does not match speaker_pattern '{pattern.pattern}', "
                "and the split keeps speakers apart"})
        else:
            kept.append(clip | {"speaker": None})
    matched = sum(clip["speaker"] is not None for clip in kept)
    if clips and not matched:
        raise CorpusError(f"Corpus '{corpus}': speaker_pattern '{pattern.pattern}' matches none of its "
                          f"{len(clips)} file names (first: '{PurePosixPath(clips[0]['path']).stem}')")
    unmatched = (f"{len(rejected)} rejected" if speakers_required else
                 f"{len(kept) - matched} kept without a speaker (standardised by the statistics of all "
                 "clips where a variant normalises per speaker)")
    logger.info("Corpus '%s': speaker_pattern found the speaker of %d of %d clips (%d speakers); %s",
                corpus, matched, len(clips), len({clip["speaker"] for clip in kept} - {None}), unmatched)
    return kept, rejected


def _clip_id(corpus: str, relative: PurePosixPath) -> str:
    # A CSV manifest may list absolute paths: no "corpus//..." ids.
    return f"{corpus}/{relative.with_suffix('').as_posix().lstrip('/')}"


def list_audio(corpus: str, root: Path) -> list[PurePosixPath]:
    """Audio files under root; the others are counted in the log, so that a format the readers
    skip (say .m4a) does not vanish unnoticed."""
    entries = list(root.rglob("*"))
    files = [p for p in entries if p.is_file()]
    dangling = [p for p in entries if p.is_symlink() and not p.exists()]
    if dangling:
        logger.warning("Corpus '%s': skipped %d links that lead nowhere (broken, or a loop of links): %s",
                       corpus, len(dangling), ", ".join(str(p.relative_to(root)) for p in dangling[:5]))
    skipped = Counter(p.suffix.lower() or p.name for p in files
                      if p.suffix.lower() not in AUDIO_EXTENSIONS)
    if skipped:
        logger.info("Corpus '%s': skipped %d files that are not audio %s", corpus,
                    sum(skipped.values()), dict(skipped))
    return sorted(PurePosixPath(p.relative_to(root).as_posix()) for p in files
                  if p.suffix.lower() in AUDIO_EXTENSIONS)


def _scan_named_files(corpus: str, reader: str, root: Path) -> tuple[list[dict], list[dict]]:
    if not root.is_dir():
        raise CorpusError(
            f"Corpus '{corpus}': folder '{root}' does not exist. {DOWNLOAD_HINTS[reader]} "
            f"Or point parameter corpus_sources.{corpus}.path at it, e.g. "
            f'kedro run --params "corpus_sources.{corpus}.path=/path/to/{corpus}".'
        )
    files = list_audio(corpus, root)
    if not files:
        raise CorpusError(
            f"Corpus '{corpus}': folder '{root}' holds no audio files "
            f"({', '.join(sorted(AUDIO_EXTENSIONS))}). {DOWNLOAD_HINTS[reader]}"
        )
    parse = NAME_PARSERS[reader]
    clips, rejections = [], []
    for relative in files:
        row = {"clip_id": _clip_id(corpus, relative), "corpus": corpus,
               "path": str(root / relative)}
        try:
            clips.append(row | parse(relative))
        except ValueError as error:
            rejections.append(row | {"stage": "scan", "reason": str(error)})
    if not clips:
        raise CorpusError(
            f"Corpus '{corpus}': none of the {len(files)} audio files under '{root}' matches the "
            f"'{reader}' naming scheme (first: '{files[0]}': {rejections[0]['reason']}). "
            f"Is corpus_sources.{corpus}.reader right for this folder?"
        )
    return clips, rejections


def _crema_d_genders(root: Path) -> dict[str, str]:
    """CREMA-D keeps actors' sex in VideoDemographics.csv beside (or above) the audio folder."""
    for candidate in (root / "VideoDemographics.csv", root.parent / "VideoDemographics.csv"):
        if candidate.is_file():
            table = pd.read_csv(candidate, dtype=str)
            if not {"ActorID", "Sex"} <= set(table.columns):
                raise CorpusError(f"'{candidate}' needs columns ActorID and Sex, as in CREMA-D's "
                                  f"release; it has {list(table.columns)}")
            return dict(zip(table["ActorID"], table["Sex"].str.lower(), strict=True))
    return {}


def _scan_csv(corpus: str, manifest_file: Path) -> tuple[list[dict], list[dict]]:
    if not manifest_file.is_file():
        raise CorpusError(
            f"Corpus '{corpus}': manifest '{manifest_file}' does not exist. {DOWNLOAD_HINTS['csv']}"
        )
    table = pd.read_csv(manifest_file, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise CorpusError(
            f"Corpus '{corpus}': manifest '{manifest_file}' lacks column(s) {sorted(missing)}; "
            f"it has {list(table.columns)}. {DOWNLOAD_HINTS['csv']}"
        )
    clips, rejections = [], []
    for record in table.to_dict("records"):
        relative = PurePosixPath(record["path"])
        audio = relative if relative.is_absolute() else manifest_file.parent / relative
        row = {"clip_id": _clip_id(corpus, relative), "corpus": corpus, "path": str(audio)}
        if not Path(audio).is_file():
            rejections.append(row | {"stage": "scan", "reason": "file listed in manifest not found"})
            continue
        clips.append(row | {
            "source_label": record["label"],
            "speaker": record.get("speaker") or None,
            "gender": record.get("gender") or None,
            "statement": record.get("statement") or None,
        })
    return clips, rejections


def scan_corpus(corpus: str, source: Mapping[str, Any], speakers_required: bool = False
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List one corpus's clips (with source labels) and the files rejected by name.

    `speakers_required` (a split that keeps speakers apart) turns a file name that `speaker_pattern`
    does not match into a rejection."""
    reader = source.get("reader")
    if reader not in READERS:
        raise CorpusError(
            f"Corpus '{corpus}': unknown reader '{reader}'; choose one of {sorted(READERS)}"
        )
    pattern = compile_speaker_pattern(corpus, source)
    root = Path(source["path"])
    if reader in ("csv", "demo"):
        clips, rejections = _scan_csv(corpus, root / "manifest.csv" if reader == "demo" else root)
        if not clips:
            raise CorpusError(
                f"Corpus '{corpus}': none of the {len(rejections)} clips listed in '{root}' can be "
                f"used (first: {rejections[0]['path'] if rejections else 'none listed'}"
                f"{': ' + rejections[0]['reason'] if rejections else ''})"
            )
    else:
        clips, rejections = _scan_named_files(corpus, reader, root)
    if pattern is not None:
        clips, unmatched = _speakers_from_names(corpus, clips, pattern, speakers_required)
        rejections += unmatched
    clip_table = pd.DataFrame(clips, columns=[c for c in CLIP_COLUMNS if c != "emotion"])
    # a.wav beside a.flac would give two clips one id: keep the first, reject the rest.
    duplicate = clip_table["clip_id"].duplicated()
    rejections += [row | {"stage": "scan", "reason": "another file has the same name and path "
                          "but a different extension"}
                   for row in clip_table.loc[duplicate, ["clip_id", "corpus", "path"]]
                   .to_dict("records")]
    clip_table = clip_table[~duplicate].reset_index(drop=True)
    if reader == "crema_d":
        clip_table["gender"] = clip_table["speaker"].map(_crema_d_genders(root))
    # Speakers are only unique within a corpus.
    has_speaker = clip_table["speaker"].notna()
    clip_table.loc[has_speaker, "speaker"] = corpus + ":" + clip_table.loc[has_speaker, "speaker"]
    return clip_table, pd.DataFrame(rejections, columns=REJECTION_COLUMNS)

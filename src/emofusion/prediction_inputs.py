"""What `emofusion predict` is given, read: the audio files (folders walked, each file once), their
speakers from a CSV, and the notes it prints on how the files were standardised."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from emofusion.errors import SpeakersTableError
from emofusion.pipelines.data_processing.corpora import AUDIO_EXTENSIONS, list_audio
from emofusion.standardisation import has_own_statistics


def audio_files(paths: Sequence[Path]) -> tuple[list[Path], pd.DataFrame]:
    """The files given and every audio file under the folders given, each once (a file named twice,
    or also found in a folder given, is predicted once); and the paths that give no file, with the
    reason."""
    files: dict[Path, Path] = {}  # resolved -> as given
    missing = []
    for path in paths:
        if path.is_dir():
            found = [path / relative for relative in list_audio(str(path), path)]
            if not found:
                formats = ", ".join(sorted(AUDIO_EXTENSIONS))
                missing.append((path, f"no audio files ({formats}) in this folder"))
            for file in found:
                files.setdefault(file.resolve(), file)
        elif path.is_file():
            files.setdefault(path.resolve(), path)
        else:
            missing.append((path, "no such file or folder"))
    return list(files.values()), pd.DataFrame(
        [{"file": str(path), "reason": reason} for path, reason in missing], columns=["file", "reason"])


def speakers_from_csv(table: Path, files: Sequence[Path]) -> list[str]:
    """The speaker of each file from a CSV with columns `path` and `speaker` (paths relative to the
    CSV's folder, as the csv corpus reader reads them). A file named twice (also as another path to
    it) is refused: one row would silently win over the other."""
    rows = pd.read_csv(table, dtype=str)
    if not {"path", "speaker"} <= set(rows.columns):
        raise SpeakersTableError(f"{table} needs the columns path and speaker; it has "
                                 f"{', '.join(rows.columns)}")
    resolved = pd.Series([(table.parent / path).resolve() for path in rows["path"]], dtype=object)
    named_twice = resolved.duplicated(keep=False)
    if named_twice.any():
        raise SpeakersTableError(
            f"{table} names {resolved[named_twice].nunique()} file(s) more than once: "
            f"{', '.join(rows['path'][named_twice.to_numpy()])}; give each file one row, with its speaker")
    speaker = dict(zip(resolved, rows["speaker"], strict=True))
    missing = [str(file) for file in files if pd.isna(speaker.get(file.resolve()))]
    if missing:
        raise SpeakersTableError(f"{table} gives no speaker for {len(missing)} of the {len(files)} files "
                                 f"(first: {', '.join(missing[:3])})")
    return [speaker[file.resolve()] for file in files]


def speaker_fallback_note(windows: pd.DataFrame, files: Sequence[Path], speakers: Sequence[str],
                          min_clips: int) -> str | None:
    """The line `emofusion predict` prints on stderr when some usable files (those with `windows`)
    were standardised by the training run's statistics of all clips, not by their speaker's, as
    fusion decided (`has_own_statistics`, each file one recording): how many, and why. Every file has
    a speaker here (`--speakers` must name each), so the reason is always too few files. None when
    no file fell back."""
    speaker_of = dict(zip(map(str, files), speakers, strict=True))
    used = windows["file"].drop_duplicates()
    fell_back = int((~has_own_statistics(used.map(speaker_of), min_clips)).sum())
    if not fell_back:
        return None
    return (f"{fell_back} of the {len(used)} usable file(s) standardised by the statistics of all the "
            "training run's clips, not by their speaker's own: their speaker has fewer than "
            f"{min_clips} usable files here.")


def corpus_note(windows: pd.DataFrame, min_clips: int) -> str:
    """The line `emofusion predict` prints on stderr for a model trained on features standardised
    per corpus: the files given are standardised together as one corpus, which is right only for a
    batch that mixes emotions; or, too few to stand for a corpus, by the training run's statistics."""
    used = windows["file"].nunique()
    if used < min_clips:
        return (f"This model standardises features per corpus; {used} usable file(s) are too few to stand "
                f"for a corpus (fewer than {min_clips}): standardised by the statistics of all the training "
                "run's clips.")
    return (f"This model standardises features per corpus: the {used} usable files were standardised "
            "together, as one corpus. Give recordings of one kind (one corpus, one recording set) that mix "
            "emotions: a batch of one emotion loses what marks that emotion.")

"""The project's exceptions: one module, one base, and the builtin bases callers already catch."""

import ast
import builtins
from pathlib import Path

import pytest

from emofusion import errors

SRC = Path(errors.__file__).parent
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}


def test_exceptions_are_defined_in_emofusion_errors_only():
    elsewhere = [f"{path.relative_to(SRC)}: {node.name}"
                 for path in SRC.rglob("*.py") if path.name != "errors.py"
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ClassDef)
                 and any(isinstance(base, ast.Name) and base.id in BUILTIN_EXCEPTIONS for base in node.bases)]
    assert elsewhere == []


@pytest.mark.parametrize(("error", "builtin"), [
    (errors.ParameterError, ValueError), (errors.CorpusError, ValueError),
    (errors.TransferConfigError, ValueError), (errors.FusionConfigError, ValueError),
    (errors.SplitConfigError, ValueError), (errors.ClassifierConfigError, ValueError),
    (errors.FineTuningConfigError, errors.ClassifierConfigError), (errors.ClipRejected, ValueError),
    (errors.MissingClipsError, KeyError), (errors.StaleInputError, RuntimeError),
    (errors.MissingInputError, RuntimeError), (errors.ImageNetWeightsUnavailable, RuntimeError),
    (errors.ModelMismatchError, ValueError), (errors.SpeakersNeededError, ValueError),
    (errors.SpeakersTableError, ValueError)])
def test_each_error_is_an_emofusion_error_and_keeps_its_builtin_base(error, builtin):
    assert issubclass(error, errors.EmoFusionError) and issubclass(error, builtin)


def test_the_errors_with_their_own_message_still_say_what_to_do():
    missing = errors.MissingClipsError(["a", "b"])
    assert missing.missing == ["a", "b"] and "re-run the pipeline that produced it" in str(missing)
    unavailable = errors.ImageNetWeightsUnavailable("vgg16", "https://host/vgg16_notop.h5", "no network")
    assert unavailable.file.name == "vgg16_notop.h5"
    assert str(unavailable).startswith(
        "ImageNet weights for backbone 'vgg16' could not be downloaded (no network)")

"""Log-mel spectrograms to features of an ImageNet-pretrained CNN with its head removed."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

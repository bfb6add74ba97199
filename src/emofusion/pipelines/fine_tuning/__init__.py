"""fine_tuning: ImageNet CNNs fine-tuned on spectrogram images (frozen C1 or partly unfrozen C2),
an LSTM on frame sequences, and late fusion of their class probabilities, as namespaced pipelines
on modelling's shared split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

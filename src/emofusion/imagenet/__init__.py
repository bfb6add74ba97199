"""ImageNet backbones below the pipelines: their settings, how they are built, and spectrograms as
their images; the transfer-feature and fine-tuning pipelines both use them."""

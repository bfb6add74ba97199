"""The learning core, below the pipelines: estimators, the training process, model assembly and
selection over validation clips, the fold loop, late fusion and the prediction table. The modelling
and fine-tuning pipelines call it; it imports no pipeline."""

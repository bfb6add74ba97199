from kedro.pipeline import Pipeline, node

from emofusion.engine import PER_CLIP_TAG
from emofusion.run_spec import RunSpec

from .nodes import build_corpus_manifest, preprocess_audio, report_clip_usage


def create_pipeline(spec: RunSpec) -> Pipeline:
    return Pipeline([
        node(
            build_corpus_manifest,
            inputs=["params:corpora", "params:corpus_sources", "params:label_maps",
                    "params:emotion_vocabulary", "params:emotions", "params:demo_corpus",
                    "params:random_seed", "params:split.strategy"],
            outputs=["corpus_manifest", "manifest_rejections"],
            name="build_corpus_manifest",
        ),
        node(
            preprocess_audio,
            inputs=["corpus_manifest", "params:audio", "params:n_jobs"],
            outputs=["preprocessed_audio", "clip_manifest", "audio_rejections"],
            name="preprocess_audio",
            tags=PER_CLIP_TAG,
        ),
        node(
            report_clip_usage,
            inputs=["clip_manifest", "manifest_rejections", "audio_rejections"],
            outputs="rejected_clips",
            name="report_clip_usage",
        ),
    ])

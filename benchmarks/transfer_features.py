"""Time the transfer_features step against the bare CNN and this machine's matrix-multiply rate.

    python benchmarks/transfer_features.py --corpus-path ../shared/data/ravdess

In a scratch copy of the project it makes the log-mel spectrograms once. Then, for each backbone,
one fresh Python process (so that memory figures do not mix backbones):
1. runs the transfer_features pipeline through a Kedro session, as `kedro run` does: images per
   second of the whole step (model building, tracing, image conversion, inference, saving) and
   its peak memory (PSS of the process);
2. runs it again, which must reuse the stored features;
3. times a bare `model.predict` of the same network on random batches of the same size, and a
   float32 matrix multiply, for the ceiling of this machine.
The CPU time stolen by the hypervisor during each phase is reported too: on a shared virtual
machine it is what makes two runs of the same thing differ.
Weights do not change the speed, so the default is random weights (ImageNet ones cannot be
downloaded here). The cached run is also timed as a user sees it: a whole `kedro run` command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml
from _harness import measured_kedro_run, pss, scratch_project

GFLOP_PER_IMAGE = {"inception_resnet_v2": 26.4}  # at 299x299, multiply and add counted apart


class Phase:
    """Wall time, CPU time of this process, CPU share stolen by the hypervisor and peak PSS over a
    block. CPU time does not grow when the hypervisor steals the machine, so rates per CPU-second
    compare runs that were stolen from unequally."""

    def __enter__(self) -> Phase:
        self._cpu = psutil.cpu_times()
        self._process_cpu = sum(os.times()[:2])
        self.peak_mb = pss(os.getpid()) / 2**20
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            self.peak_mb = max(self.peak_mb, pss(os.getpid()) / 2**20)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = sum(os.times()[:2]) - self._process_cpu
        self._done.set()
        self._sampler.join()
        now = psutil.cpu_times()
        total = sum(now) - sum(self._cpu)
        self.steal = (now.steal - self._cpu.steal) / total if total else 0.0


def matmul_gflops(size: int = 4096, repeats: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def bare_predict(backbone: str, registry: dict, batch_size: int, precision: str, images: int
                 ) -> tuple[float, Phase]:
    """Images per second of model.predict on random inputs, after a warm-up call that traces."""
    from emofusion.imagenet.backbones import build_backbone
    from emofusion.imagenet.config import backbone_spec

    spec = backbone_spec(backbone, registry)
    model = build_backbone(spec, None, precision).model
    count = max(1, images // batch_size) * batch_size
    batch = np.random.default_rng(0).uniform(-1, 1, (count, *spec.input_size, 3)).astype(np.float32)
    model.predict(batch[:batch_size], batch_size=batch_size, verbose=0)
    with Phase() as phase:
        model.predict(batch, batch_size=batch_size, verbose=0)
    return count / phase.seconds, phase


def measure(project: Path, backbone: str, batch_size: int, precision: str, bare_images: int
            ) -> dict[str, Any]:
    """Everything for one backbone, in this process (run as a child of main)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.chdir(project)
    bootstrap_project(project)

    def run_step() -> Phase:
        with KedroSession.create(project_path=project) as session, Phase() as phase:
            session.run(pipeline_name="transfer_features")
        return phase

    features = project / "data/04_feature/transfer_features"
    shutil.rmtree(features, ignore_errors=True)  # left by an earlier backbone or benchmark
    first = run_step()
    cached = run_step()
    meta = json.loads((features / "metadata.json").read_text())
    registry = yaml.safe_load((project / "conf/base/parameters_transfer_features.yml").read_text())[
        "backbones"]
    bare, bare_phase = bare_predict(backbone, registry, batch_size, precision, bare_images)
    clips = len(json.loads((features / "clip_ids.json").read_text()))
    return {
        "clips": clips, "width": meta["width"], "input_size": meta["input_size"],
        "device": meta["device"], "step_s": first.seconds, "step_images_per_s": clips / first.seconds,
        "step_steal": first.steal, "step_peak_pss_mb": first.peak_mb,
        "step_images_per_cpu_s": clips / first.cpu_seconds,
        "inference_loop_images_per_s": meta["clips_per_second"],
        "bare_predict_images_per_s": bare, "bare_steal": bare_phase.steal,
        "bare_predict_images_per_cpu_s": bare * bare_phase.seconds / bare_phase.cpu_seconds,
        "cached_step_s": cached.seconds, "matmul_gflops": matmul_gflops(),
    }


def report(backbone: str, figures: dict[str, Any], batch_size: int, precision: str) -> None:
    bare = figures["bare_predict_images_per_s"]
    size = figures["input_size"]
    print(f"\n{backbone} at {size[0]}x{size[1]}, {figures['width']} values per clip, batch {batch_size}, "
          f"{precision}, {figures['clips']} clips, {figures['device']}")
    print(f"  whole step (Kedro session): {figures['step_s']:7.1f} s {figures['step_images_per_s']:7.2f} "
          f"images/s = {figures['step_images_per_s'] / bare:.0%} of bare predict "
          f"(steal {figures['step_steal']:.0%})")
    print(f"  per CPU-second: step {figures['step_images_per_cpu_s']:.2f}, bare predict "
          f"{figures['bare_predict_images_per_cpu_s']:.2f} images "
          f"({figures['step_images_per_cpu_s'] / figures['bare_predict_images_per_cpu_s']:.0%})")
    print(f"  its inference loop:                 {figures['inference_loop_images_per_s']:7.2f} images/s")
    print(f"  bare model.predict:                 {bare:7.2f} images/s (steal {figures['bare_steal']:.0%})")
    print(f"  float32 matrix multiply (4096x4096): {figures['matmul_gflops']:.0f} GFLOP/s")
    if backbone in GFLOP_PER_IMAGE and size == [299, 299]:
        achieved = bare * GFLOP_PER_IMAGE[backbone]
        print(f"  bare predict runs at {achieved:.0f} GFLOP/s, "
              f"{achieved / figures['matmul_gflops']:.0%} of the matrix-multiply rate")
    print(f"  peak memory of the step:    {figures['step_peak_pss_mb']:7.0f} MB PSS")
    print(f"  cached step:                {figures['cached_step_s']:7.2f} s "
          f"({figures['cached_step_s'] / figures['step_s']:.1%} of the first)")
    print(f"  cached `kedro run` command: {figures['cached_kedro_run_wall_s']:7.2f} s wall "
          f"({figures['cached_kedro_run_wall_s'] / figures['step_s']:.1%} of the first step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", default="../shared/data/ravdess")
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--backbones", nargs="+", default=["inception_resnet_v2", "squeezenet_v1_1"])
    parser.add_argument("--weights", default="none")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--bare-images", type=int, default=160,
                        help="images for the bare model.predict rate")
    parser.add_argument("--workdir", help="scratch project folder (default: a new temp folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one backbone, in a child process
    args = parser.parse_args()

    if args.measure:
        figures = measure(Path(args.workdir), args.measure, args.batch_size, args.precision,
                          args.bare_images)
        print("FIGURES " + json.dumps(figures))
        return

    corpus = {"corpora": ["bench"], "corpus_sources": {
        "bench": {"reader": args.reader, "path": str(Path(args.corpus_path).resolve())}}}
    project = scratch_project(corpus, args.workdir)
    measured_kedro_run(project, "--to-outputs=log_mel_spectrogram")
    results: dict[str, Any] = {}
    for backbone in args.backbones:
        local = dict(corpus, transfer_features={
            "backbone": backbone, "weights": args.weights, "batch_size": args.batch_size,
            "precision": args.precision})
        (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local))
        child = subprocess.run(
            [sys.executable, __file__, "--measure", backbone, "--workdir", str(project),
             "--batch-size", str(args.batch_size), "--precision", args.precision,
             "--bare-images", str(args.bare_images)],
            capture_output=True, text=True, env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
        found = [text for text in child.stdout.splitlines() if text.startswith("FIGURES ")]
        if child.returncode or not found:
            sys.exit(f"measuring {backbone} failed:\n{(child.stdout + child.stderr)[-5000:]}")
        figures = json.loads(found[-1].removeprefix("FIGURES "))
        figures["cached_kedro_run_wall_s"] = measured_kedro_run(
            project, "--pipelines", "transfer_features")["wall_s"]
        results[backbone] = figures
        report(backbone, figures, args.batch_size, args.precision)
    print(f"\nscratch project: {project}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

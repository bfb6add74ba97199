"""The Dask engine (`execution.engine: dask`): the per-clip stages give the same values, in the same
order, as on the local engine; a chunk whose worker dies is run again; a bad clip is a rejection as
on the local engine; a scheduler that does not answer stops the run before any work."""

import logging
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import distributed
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from kedro.pipeline import Pipeline, node

from emofusion.clip_array import joined_outputs
from emofusion.engine import chunk_tasks, close_engine, current_engine, open_engine
from emofusion.errors import EngineUnreachableError
from emofusion.hooks import ExecutionHooks
from emofusion.parallel import imap_chunks
from emofusion.pipelines.data_processing.corpora import CLIP_COLUMNS
from emofusion.pipelines.data_processing.nodes import preprocess_audio
from emofusion.pipelines.feature_extraction.nodes import extract_lpcc, extract_mfcc

RATE = 16000


@pytest.fixture(autouse=True)
def local_engine_after():
    yield
    close_engine()


@pytest.fixture(scope="module")
def in_process_cluster():
    """Two workers in this process: the fastest cluster to start; the engine joins it by address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture
def corpus(tmp_path) -> pd.DataFrame:
    """A tiny corpus of tones and noise at different rates, with two clips that cannot be used."""
    generator = np.random.default_rng(0)
    paths = {}
    for i in range(7):
        t = np.arange(int(1.3 * RATE)) / RATE
        signal = 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.02 * generator.standard_normal(len(t))
        paths[f"tiny/clip{i}"] = tmp_path / f"clip{i}.wav"
        sf.write(paths[f"tiny/clip{i}"], signal.astype(np.float32), RATE if i % 2 else 22050)
    paths["tiny/silent"] = tmp_path / "silent.wav"
    sf.write(paths["tiny/silent"], np.zeros(RATE, dtype=np.float32), RATE)
    paths["tiny/garbage"] = tmp_path / "garbage.wav"
    paths["tiny/garbage"].write_bytes(b"not audio at all")
    rows = [{"clip_id": clip_id, "corpus": "tiny", "path": str(path), "speaker": "s1", "emotion": "neutral",
             "source_label": "neutral"} for clip_id, path in sorted(paths.items())]
    return pd.DataFrame(rows).reindex(columns=CLIP_COLUMNS, fill_value="")


def per_clip_stages(corpus, parameters):
    audio_options = dict(parameters["audio"], duration_s=1.0)
    audio, manifest, rejected = joined_outputs(preprocess_audio(corpus, audio_options, n_jobs=1))
    return (audio, manifest, rejected, extract_mfcc(audio, parameters["mfcc"], n_jobs=1),
            extract_lpcc(audio, parameters["lpcc"], n_jobs=1))


def test_the_dask_engine_gives_the_local_engine_s_values_in_its_order(in_process_cluster, corpus, parameters):
    local = per_clip_stages(corpus, parameters)
    open_engine(engine="dask", scheduler_address=in_process_cluster.scheduler_address, chunk_clips=2)
    with distributed.get_task_stream(current_engine().dask.client()) as tasks:
        on_dask = per_clip_stages(corpus, parameters)
    # Every stage's chunks ran on the cluster: 9 clips, then 7 usable ones, 2 clips a chunk.
    ran = pd.Series([task["key"].split("-", 1)[0] for task in tasks.data]).value_counts().to_dict()
    assert ran == {"_preprocess_chunk": 5, "_clip_vectors": 8}
    for here, there in zip(local[::3] + local[3:], on_dask[::3] + on_dask[3:], strict=True):
        assert there.clip_ids.tolist() == here.clip_ids.tolist()
        np.testing.assert_array_equal(there.values, here.values)
        assert there.metadata == here.metadata
    pd.testing.assert_frame_equal(on_dask[1], local[1])
    # A bad clip on a worker is a recorded rejection, as on the local engine.
    pd.testing.assert_frame_equal(on_dask[2], local[2])
    assert on_dask[2]["clip_id"].tolist() == ["tiny/garbage", "tiny/silent"]
    assert len(on_dask[0]) == 7


def chunk_lengths(chunk: list[int]) -> list[int]:
    return [len(chunk)] * len(chunk)


def test_chunk_clips_sizes_the_chunks_on_the_local_engine_too():
    open_engine(engine="local", chunk_clips=4)
    assert current_engine().dask is None
    sizes = list(imap_chunks(chunk_lengths, list(range(10)), n_jobs=1, description="sizes"))
    assert sizes == [4] * 8 + [2] * 2


class Context:
    def __init__(self, execution):
        self.params = {"execution": execution}


def test_the_run_hook_opens_the_engine_of_the_settings_and_closes_it_however_the_run_ends(in_process_cluster):
    hooks = ExecutionHooks()
    hooks.after_context_created(Context({"engine": "dask", "chunk_clips": 3,
                                         "scheduler_address": in_process_cluster.scheduler_address}))
    for end in (lambda: hooks.after_pipeline_run({}, None, None),
                lambda: hooks.on_pipeline_error(RuntimeError(), {}, None, None)):
        opening = hooks.before_pipeline_run({}, Pipeline([]), None)  # a wrapper: its part before the others'
        next(opening)
        assert current_engine().chunk_clips == 3
        client = current_engine().dask.client()
        assert client.status == "running"
        end()
        assert current_engine().dask is None and client.status == "closed"


def echo_but_die_once(chunk: list[int], marker: str) -> list[int]:
    """The chunk's items, but the first chunk to run ends its worker's process half-way through."""
    done = []
    for item in chunk:
        if done and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        done.append(item)
    return done


def test_a_chunk_whose_worker_dies_runs_again_and_every_item_comes_back_once(tmp_path, caplog):
    marker = tmp_path / "died"
    with caplog.at_level(logging.INFO, logger="emofusion.engine"):
        open_engine(engine="dask", workers=2, chunk_clips=3)
        items = list(range(20))
        assert list(imap_chunks(echo_but_die_once, items, n_jobs=1, description="dying",
                                marker=str(marker))) == items
    assert marker.exists()  # a worker did die
    assert "Started a Dask cluster of 2 workers on this machine; its dashboard: http" in caplog.text


def test_a_cluster_whose_dashboard_port_is_taken_gives_its_own_in_the_log_without_a_warning(caplog):
    with socket.socket() as holder:
        try:
            holder.bind(("", 8787))  # Dask's dashboard port
            holder.listen()
        except OSError:  # taken already: the case under test
            pass
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO,
                                                                             "emofusion.engine"):
            warnings.simplefilter("always")
            open_engine(engine="dask", workers=1)
            current_engine().dask.client()
            close_engine()
    assert not [warning for warning in caught if "already in use" in str(warning.message)]
    started = next(record.getMessage() for record in caplog.records if "its dashboard" in record.getMessage())
    assert "http" in started and ":8787/" not in started


def test_the_engine_opened_with_the_same_settings_is_kept_with_the_cluster_it_started():
    """The `kedro run` command opens the run's engine and starts its cluster (emofusion.run_start);
    the run's hook, opening the engine of the same settings and asking for the same workers, keeps
    both: one cluster, started once."""
    engine = open_engine(engine="dask", workers=1)
    modules = ["emofusion.pipelines.feature_extraction.nodes"]
    engine.dask.start_in_background(modules)
    starting = engine.dask._start._thread
    assert open_engine(engine="dask", workers=1) is engine
    engine.dask.start_in_background(modules)
    assert engine.dask._start._thread is starting
    assert len(engine.dask.client().nthreads()) == 1
    assert open_engine(engine="dask", workers=1, chunk_clips=5) is not engine  # other settings: anew
    assert engine.dask._client is None  # the first one's cluster ended with it


def test_a_chunk_that_kills_worker_after_worker_stops_the_map_saying_what_to_change(tmp_path):
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        open_engine(engine="dask", workers=1)
        with pytest.raises(RuntimeError, match="Dask workers running echo_but_die_once died again and "
                                               "again.*raise execution.worker_memory or lower"):
            list(imap_chunks(echo_but_die_once, [1, 2], n_jobs=1, description="dying",
                             marker=str(tmp_path / "died")))


def failing(chunk: list[int]) -> list[int]:
    raise ValueError(f"a bug in the chunk function at {chunk[0]}")


def test_an_error_in_a_chunk_function_is_raised_here(in_process_cluster):
    open_engine(engine="dask", scheduler_address=in_process_cluster.scheduler_address)
    with pytest.raises(ValueError, match="a bug in the chunk function at 0"):
        list(imap_chunks(failing, [0, 1, 2], n_jobs=1, description="failing"))


def test_a_scheduler_that_does_not_answer_stops_the_engine_opening_naming_its_address():
    address = "tcp://127.0.0.1:9"  # the discard port: nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(EngineUnreachableError, match=f"no Dask scheduler answered at {address}"):
        open_engine(engine="dask", scheduler_address=address)
    assert current_engine().dask is None  # the run would go on nowhere


def test_a_run_whose_scheduler_does_not_answer_stops_before_any_node_naming_the_address(scratch_project):
    project = scratch_project()
    address = "tcp://127.0.0.1:9"
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore", COLUMNS="400",
               DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="1s")
    run = subprocess.run([sys.executable, "-m", "kedro", "run", "--pipelines=data_processing", "--params",
                          f"execution.engine=dask,execution.scheduler_address={address}"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert f"no Dask scheduler answered at {address}" in run.stderr
    # Not even the corpus manifest, the first node, which writes the demo corpus.
    made = [path for path in (project / "data").rglob("*") if path.is_file()]
    assert made == [], made


def row_sums(chunk: np.ndarray) -> list[float]:
    return [float(row.sum()) for row in chunk]


def test_rows_of_a_mapped_file_go_to_workers_here_as_row_numbers_and_give_the_same_results(tmp_path):
    values = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    np.save(tmp_path / "values.npy", values)
    mapped = np.load(tmp_path / "values.npy", mmap_mode="r")
    task, chunks = chunk_tasks(row_sums, mapped, 16, {}, same_machine=True)
    assert chunks == [(0, 16), (16, 32), (32, 40)]  # no rows travel, only where they are
    assert [s for arguments in chunks for s in task(*arguments)] == row_sums(values)
    # A cluster elsewhere cannot read this machine's file: the rows themselves travel.
    _, shipped = chunk_tasks(row_sums, mapped, 16, {}, same_machine=False)
    assert [len(chunk) for chunk, in shipped] == [16, 16, 8]
    # And the local engine's two workers, reading the rows from the file, give the same sums.
    sums = imap_chunks(row_sums, mapped, n_jobs=2, chunk_size=16, description="sums")
    assert list(sums) == row_sums(values)


def test_a_run_stopped_by_another_hook_before_its_first_node_ends_the_engine_it_opened(in_process_cluster):
    hooks = ExecutionHooks()
    hooks.after_context_created(Context({"engine": "dask",
                                         "scheduler_address": in_process_cluster.scheduler_address}))
    opening = hooks.before_pipeline_run({}, Pipeline([]), None)
    next(opening)
    client = current_engine().dask.client()
    with pytest.raises(RuntimeError, match="the lock"):
        opening.throw(RuntimeError("the lock is held"))  # what RunLockHooks raises, say
    assert current_engine().dask is None and client.status == "closed"


def test_the_local_workers_start_as_a_run_with_per_clip_nodes_begins_and_end_with_it():
    from emofusion import parallel
    from emofusion.engine import PER_CLIP_TAG

    parallel.stop_chunk_workers()  # those an earlier test in this process left
    hooks = ExecutionHooks()
    context = Context({"engine": "local"})
    context.params["n_jobs"] = 2
    hooks.after_context_created(context)
    no_per_clip = Pipeline([node(row_sums, "values", "sums", name="sums")])
    opening = hooks.before_pipeline_run({}, no_per_clip, None)
    next(opening)
    assert parallel._chunk_executor is None  # nothing to start them for
    per_clip = Pipeline([node(row_sums, "values", "sums", name="sums", tags=PER_CLIP_TAG)])
    opening = hooks.before_pipeline_run({}, per_clip, None)
    next(opening)
    parallel._start.wait()  # they start in a thread, beside the run's own start-up
    workers = parallel._chunk_executor
    assert workers is not None and workers._max_workers == 2
    processes = list(workers._processes.values())
    assert len(processes) == 2
    hooks.after_pipeline_run({}, per_clip, None)
    assert parallel._chunk_executor is None
    assert not any(process.is_alive() for process in processes)

"""The Dask runner (`kedro run --runner=emofusion.runner.DaskRunner`): the models of a run trained as
tasks on a Dask cluster make the same test predictions, byte for byte, as a sequential run; what
nodes hand each other in memory reaches the next node; a node's error on a worker fails the run with
the node's own error."""

import shutil
from pathlib import Path

import distributed
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro_datasets.pickle import PickleDataset

from emofusion.engine import close_engine, open_engine
from emofusion.runner import DaskRunner
from emofusion.worker_server import worker_thread_environment
from tests.test_end_to_end import TINY_DEMO, kedro, log_of
from tests.test_no_lost_work import LOCAL

PIPELINES = "data_processing,feature_extraction,fusion,modelling"
MODELS = ("mfcc/svm", "mfcc/dnn", "lpcc/svm", "lpcc/dnn")
# A cluster of 2 worker processes that the run's engine starts and its hook stops; every fold trained again.
ON_DASK = (f"{TINY_DEMO},resume=false,execution.engine=dask,execution.workers=2", "--runner",
           "emofusion.runner.DaskRunner")


def predictions(project: Path) -> dict[str, bytes]:
    return {model: (project / f"data/07_model_output/{model}_test_predictions.csv").read_bytes()
            for model in MODELS}


def test_models_trained_on_a_dask_cluster_predict_what_a_sequential_run_does(scratch_project):
    """Byte for byte, the networks' too, when the sequential run has the thread counts the engine
    gives each of the cluster's 2 workers: with other counts the sums run in another order, and the
    networks' probabilities differ in their last float32 digit."""
    project = scratch_project(LOCAL)
    sequential = kedro(project, "run", "--pipelines", PIPELINES, "--params", TINY_DEMO,
                       env=worker_thread_environment(2))
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    expected = predictions(project)
    shutil.rmtree(project / "data/07_model_output")
    run = kedro(project, "run", "--pipelines=modelling", "--params", *ON_DASK)
    assert run.returncode == 0, run.stderr[-3000:]
    for model in MODELS:
        fit = f"modelling.{model.replace('/', '.')}.fit_and_predict"
        assert f"Completed node {fit} on a Dask worker" in log_of(run)
    assert predictions(project) == expected


def double(values: list[int]) -> list[int]:
    return [2 * value for value in values]


def total(values: list[int]) -> int:
    return sum(values)


def fail(values: list[int]) -> int:
    raise ValueError(f"cannot score {len(values)} values")


@pytest.fixture
def cluster_engine():
    """The run's engine on two workers in this process: the fastest cluster to start."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        open_engine(engine="dask", scheduler_address=cluster.scheduler_address)
        yield
        close_engine()


def test_what_nodes_hand_each_other_in_memory_reaches_the_next_node(cluster_engine, tmp_path):
    total_file = PickleDataset(filepath=str(tmp_path / "total.pkl"))
    catalog = DataCatalog({"values": MemoryDataset([1, 2, 3]), "total": total_file})
    DaskRunner().run(Pipeline([node(double, "values", "doubled"), node(total, "doubled", "total")]), catalog)
    assert total_file.load() == 12


def test_a_node_s_error_on_a_worker_fails_the_run_with_its_message(cluster_engine, caplog):
    catalog = DataCatalog({"values": MemoryDataset([1, 2, 3])})
    steps = Pipeline([node(double, "values", "doubled", name="double"), node(fail, "doubled", "score",
                                                                             name="score")])
    with pytest.raises(ValueError, match="cannot score 3 values"):
        DaskRunner().run(steps, catalog)
    assert "Node score failed on a Dask worker: cannot score 3 values" in caplog.text


def test_without_the_run_s_cluster_the_runner_opens_one_of_the_execution_settings_and_closes_it(tmp_path):
    total_file = PickleDataset(filepath=str(tmp_path / "total.pkl"))
    catalog = DataCatalog({"values": MemoryDataset([1, 2, 3]), "total": total_file,
                           "parameters": MemoryDataset({"execution": {"workers": 1}})})
    DaskRunner().run(Pipeline([node(double, "values", "doubled"), node(total, "doubled", "total")]), catalog)
    assert total_file.load() == 12
    with pytest.raises(ValueError, match="No global client"):
        distributed.get_client()

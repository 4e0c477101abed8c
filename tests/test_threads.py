"""Thread and worker defaults: reader workers plus torch threads never exceed the CPUs (issue 12)."""
import pytest
import torch

from extract import images


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("gpu", [False, True])
def test_workers_and_threads_fit_the_cpus(monkeypatch, cpus, gpu):
    monkeypatch.setattr(images, "available_cpus", lambda: cpus)
    workers = images.default_workers(gpu=gpu)
    threads = images.default_threads(gpu=gpu)
    assert workers >= 1 and threads >= 1
    assert workers + threads <= max(2, cpus)  # one core: one worker and one thread, the minimum
    if not gpu:
        assert workers <= 4


@pytest.mark.parametrize("cpus", [1, 2, 16])
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # the CPU count is faked; nothing starts
def test_a_model_that_runs_in_the_workers_gets_every_cpu(monkeypatch, cpus):
    # dlib's net and the detection pass run in the reader workers; the main process only collects rows
    monkeypatch.setattr(images, "available_cpus", lambda: cpus)
    assert images.default_workers(model_in_workers=True) == cpus
    rows = images.ImageRows(["x.jpg"], lambda image: image, input_shape=(1,))
    loader = images.make_loader(rows, [[0]], workers=None, model_in_workers=True)
    assert loader.num_workers == cpus
    assert images.make_loader(rows, [[0]], workers=None).num_workers == max(1, min(4, cpus // 2))


def test_configure_threads_lowers_torch_and_honours_an_explicit_count(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(images, "available_cpus", lambda: 4)
    try:
        torch.set_num_threads(4)
        assert images.configure_threads(workers=1) == 3 == torch.get_num_threads()
        assert images.configure_threads(threads=1) == 1 == torch.get_num_threads()
        # never raised: in a forked child torch runs one thread, and raising it there deadlocks OpenMP
        assert images.configure_threads(workers=1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

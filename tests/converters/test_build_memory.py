"""The build's memory: a captured torch module is released once its component is built, and the
build summary reports the process's peak RSS."""

import gc
import weakref

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def test_release_frees_the_torch_module_and_later_use_is_an_error():
    import torch

    from edgegen.converters import capture

    model = torch.nn.Linear(8, 4)
    alive = weakref.ref(model)
    cap = capture.Captured("Linear", capture._wrap(lambda m, x: m(x))(model).eval(),
                           {"x": np.zeros((1, 8), np.float32)}, ["y"])
    assert capture.run_torch(cap)["y"].shape == (1, 4)
    del model
    gc.collect()
    assert alive() is not None          # the plan's Captured holds it until its component is built
    cap.release()
    assert alive() is None
    for use in (capture.run_torch, capture.export):
        with pytest.raises(RuntimeError, match="released after its component was built"):
            use(cap)


def test_peak_rss_is_reported_in_mib():
    from edgegen.converters.build import BuildReport, peak_rss_mib

    peak = peak_rss_mib()
    assert peak is not None and 10 < peak < 64 * 1024
    assert BuildReport("a", "cpu", 1.0, 10, peak_rss_mib=peak).to_json()["peak_rss_mib"] == peak

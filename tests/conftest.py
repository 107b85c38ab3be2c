"""Shared test setup: fixture discovery, and the slow and GPU markers."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = pathlib.Path(os.environ.get("KERAS_R3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
OFFICIAL_CHECKPOINT = FIXTURES / "official" / "jester_shufflenet_0.5x_G3_RGB_16_best.pth"
REFERENCE = FIXTURES / "reference" / "jester_shufflenet_0.5x_G3"
GESTURES = {name: FIXTURES / "clips" / "gestures" / name for name in ("thumb_up", "thumb_down", "stop_sign")}
GESTURE_LABELS = {"thumb_up": "Thumb_Up", "thumb_down": "Thumb_Down", "stop_sign": "Stop_Sign"}


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--runslow"):
        skip = pytest.mark.skip(reason="slow: takes minutes on 2 CPU cores; run with --runslow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    if not _gpu_visible():
        skip = pytest.mark.skip(reason="needs a GPU and none is visible")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def _gpu_visible():
    return any(pathlib.Path("/dev").glob("nvidia[0-9]*"))


@pytest.fixture(scope="session")
def fixtures_dir():
    """The shared real fixtures: required under CI=true, else skipped if absent."""
    if not (FIXTURES / "README.md").exists():
        message = f"real fixtures not found at {FIXTURES} (set KERAS_R3D_FIXTURES)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return FIXTURES

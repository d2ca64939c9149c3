"""Shared fixtures: paths to the real data beside the repository."""
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FLMCORE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (the real annotated sets); tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _in_source_checkout() -> bool:
    """flmcore is imported from this repository (not from an installed wheel)."""
    import flmcore

    return Path(flmcore.__file__).resolve().parent == REPO / "flmcore"


def load_bundled_sample(name: str):
    """Load a bundled sample; skip *only* when its file is absent outside the source checkout.

    A wheel install carries no sample (``SampleNotAvailableError``): the test skips.  In the
    source checkout the sample is part of the repository, so a missing file fails; and any other
    error while loading it (a corrupt file, a loader bug) always fails: it is never hidden as a skip.
    """
    from flmcore.data import SampleNotAvailableError, load_sample

    try:
        return load_sample(name)
    except SampleNotAvailableError as exc:
        if _in_source_checkout() and not os.environ.get("FLMCORE_DATA"):
            pytest.fail(f"bundled sample {name!r} is missing from the source checkout: {exc}")
        pytest.skip(f"bundled sample {name!r} not installed (wheel install): {exc}")


@pytest.fixture
def require_sample():
    """``require_sample(name)`` loads a bundled sample (see :func:`load_bundled_sample`)."""
    return load_bundled_sample


class RecordingProgress:
    """A ``progress`` callable for DemoContext that records the descriptions it was given."""

    def __init__(self):
        self.seen = []

    def __call__(self, iterable, desc="", total=None):
        self.seen.append(desc)
        return iterable


@pytest.fixture
def recording_progress():
    return RecordingProgress()


@pytest.fixture(scope="session")
def helen_pairs():
    """The bundled HELEN pairs sample (234 crops, 68- and 29-point labels); see :func:`load_bundled_sample`."""
    return load_bundled_sample("helen_pairs")

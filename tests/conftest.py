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


@pytest.fixture
def require_sample():
    """``require_sample(name)`` loads a bundled sample, skipping when it is absent (wheel installs)."""
    def _load(name: str):
        from flmcore.data import load_sample

        try:
            return load_sample(name)
        except Exception as exc:  # the sample lives in the source checkout, not in wheels
            pytest.skip(f"bundled sample {name!r} unavailable: {exc}")
    return _load


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
    """The bundled HELEN pairs sample (234 crops, 68- and 29-point labels); skips when absent."""
    from flmcore.data import load_sample

    try:
        return load_sample("helen_pairs")
    except Exception as exc:  # the sample lives in the source checkout, not in wheels
        pytest.skip(f"helen_pairs sample not available: {exc}")

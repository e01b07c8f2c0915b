from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_system_datasets(tmp_path_factory, monkeypatch):
    """Tests see no system dataset folder and no CNN_DATA_ROOT unless they ask for them."""
    import data.sources

    monkeypatch.setattr(data.sources, "SYSTEM_DATASETS", tmp_path_factory.mktemp("no-system-datasets"))
    monkeypatch.delenv("CNN_DATA_ROOT", raising=False)

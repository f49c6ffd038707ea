"""Schemathesis over /api/openapi.json, in-process: for inputs generated from the document itself,
the API never answers 5xx and every answer conforms to the document (status, type, schema).

The schema is loaded when this module is collected (schemathesis' lazy loader does not work with
pytest 9), from an app on a temporary storage that the module's last fixture removes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from vggt_core import StudioService, VGGTSettings, load_config
from vggt_core.api import create_api_app
from vggt_core.local_space import write_sample_images

TOKEN = "contract-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORK = Path(tempfile.mkdtemp(prefix="vggt-contract-"))

# No workers: the contract is about answers, and a run started here simply stays waiting. The
# backend is a closed port, so `?check=true` answers at once that it cannot be reached.
SERVICE = StudioService(
    load_config(
        {
            "VGGT_BACKEND": "http://127.0.0.1:9",
            "VGGT_STORAGE_DIR": str(WORK / "storage"),
            "VGGT_API_TOKEN": TOKEN,
            "VGGT_CONNECT_TIMEOUT": "1",
        }
    ),
    workers=False,
)
# Runs with images, so listings meet real data (one waiting, one never started).
_FILES = [(p.name, p.read_bytes()) for p in write_sample_images(WORK / "images", count=1)]
SERVICE.submit(VGGTSettings(), _FILES)
SERVICE.add_images(SERVICE.create_run().run_id, _FILES)

schema = schemathesis.openapi.from_asgi(
    "/api/openapi.json", create_api_app(SERVICE, close_on_shutdown=False), headers=AUTH
)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    SERVICE.close()
    shutil.rmtree(WORK, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_keeps_its_documented_contract(case):
    case.call_and_validate(headers=AUTH)

"""Every TOML example in docs/sources.md is a valid `[source]` or `[power]` table."""

import re
import sys
from pathlib import Path

import pytest

from edge_daemon.power import PowerConfig
from edge_daemon.sources.base import source_config_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DOC = Path(__file__).resolve().parent.parent / "docs" / "sources.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_page_has_an_example_per_source_and_for_power():
    tables = [tomllib.loads(block) for block in BLOCKS]
    kinds = {t["source"]["type"] for t in tables if "source" in t}
    assert kinds == {"zmq", "soapysdr", "sigmf", "synthetic"}
    assert any("power" in t for t in tables)


@pytest.mark.parametrize("block", BLOCKS)
def test_example_validates(block):
    table = tomllib.loads(block)
    assert set(table) <= {"source", "power"}
    if "source" in table:
        config = source_config_from_dict(table["source"])
        assert config.type == table["source"]["type"]
    if "power" in table:
        PowerConfig.from_dict(table["power"])

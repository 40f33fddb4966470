"""The inputs the fuzzer found interesting (tests/fuzz_corpus/<target>/, kept by
`tools/fuzz_inputs.py --keep`) replayed through the parsers, without atheris: each is parsed or
refused with the parser's own clear error, never another exception (issue 14)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"


def fuzz_inputs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_inputs", ROOT / "tools" / "fuzz_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_inputs", module)
    spec.loader.exec_module(module)
    return module


FUZZ = fuzz_inputs()
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())


def test_the_corpus_is_small_and_sorted_by_target():
    assert set(FUZZ.TARGETS) == {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert 0 < len(FILES) < 200 and sum(p.stat().st_size for p in FILES) < 1 << 20
    for path in FILES:
        assert FUZZ.target_of(path.read_bytes()) == path.parent.name, path
    for name in FUZZ.TARGETS:  # every target has inputs that reach past its first check
        assert len(list((CORPUS / name).iterdir())) >= 3, name


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name[:10]}")
@pytest.mark.filterwarnings("ignore:Found undeclared extensions:DeprecationWarning")  # sigmf's
def test_every_corpus_input_is_parsed_or_refused_clearly(path):
    FUZZ.run_one(path.read_bytes())


def test_a_broken_invariant_is_a_failure_not_a_pass(monkeypatch):
    """The replay can fail: a parser that raises anything but its own error fails it."""
    seed = FUZZ.seeds()["tag_header"][0]

    def broken(data):
        raise KeyError("a parser bug")

    monkeypatch.setattr(FUZZ.zmq_source, "parse_tag_header", broken)
    with pytest.raises(KeyError):
        FUZZ.run_one(seed)

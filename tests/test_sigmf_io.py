import json
import warnings

import numpy as np
import pytest
import sigmf

from edge_core.errors import IQFormatError, SourceError
from edge_core.iq import formats
from edge_core.iq.sigmf_io import SigMFWriter, open_recording

RATE = 20e6


def _iq(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


def _write(base, x, datatype="cf32_le", annotations=()):
    with SigMFWriter(base, RATE, datatype, "test recording", {"edge_tc:seed": 3}) as writer:
        for i in range(0, x.size, 1000):
            writer.write(x[i : i + 1000])
        for start, count, meta in annotations:
            writer.annotate(start, count, meta)
    return base


ANNOTATIONS = [
    (5000, 300, {"edge_tc:phy": "802.11g", "core:label": "ack", "edge_tc:snr_db": np.float32(7.5)}),
    (100, 2000, {"edge_tc:phy": "802.11b", "core:label": "beacon"}),
    (2500, 1200, {"edge_tc:phy": "802.11n"}),
]


@pytest.fixture
def recording(tmp_path):
    x = _iq(6543)
    return _write(tmp_path / "rec", x, annotations=ANNOTATIONS), x


def test_write_then_read_back(recording):
    base, x = recording
    rec = open_recording(base)
    assert rec.sample_rate_hz == RATE and rec.datatype == "cf32_le" and rec.fmt == "cf32_le"
    assert rec.num_samples == x.size and rec.trailing_bytes == 0
    assert [a["core:sample_start"] for a in rec.annotations] == [100, 2500, 5000]
    assert rec.annotations[2]["edge_tc:snr_db"] == 7.5
    assert rec.annotations[0] == {
        "core:sample_start": 100,
        "core:sample_count": 2000,
        "core:label": "beacon",
        "edge_tc:phy": "802.11b",
    }
    np.testing.assert_array_equal(rec.read(), x)
    np.testing.assert_array_equal(rec.read(6000, 1000), x[6000:])


def test_written_metadata_validates_with_sigmf_and_its_checksum(recording):
    base, x = recording
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an undeclared extension namespace
        handle = sigmf.sigmffile.fromfile(f"{base}.sigmf-meta")  # checks core:sha512
        handle.validate()
    assert handle.get_global_field("core:sample_rate") == RATE
    assert handle.get_global_field("edge_tc:seed") == 3
    names = [e["name"] for e in handle.get_global_field("core:extensions")]
    assert names == ["edge_tc"]
    assert [c["core:sample_start"] for c in handle.get_captures()] == [0]
    np.testing.assert_array_equal(handle.read_samples(), x)


@pytest.mark.parametrize("suffix", ["", ".sigmf-meta", ".sigmf-data"])
def test_open_by_any_of_its_names(recording, suffix):
    base, x = recording
    assert open_recording(f"{base}{suffix}").num_samples == x.size


def test_iter_chunks_covers_the_recording_in_order(recording):
    base, x = recording
    chunks = list(open_recording(base).iter_chunks(1000))
    assert [start for start, _ in chunks] == list(range(0, x.size, 1000))
    assert all(c.dtype == np.complex64 for _, c in chunks)
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)
    with pytest.raises(ValueError, match="chunk_samples"):
        next(open_recording(base).iter_chunks(0))


@pytest.mark.parametrize("datatype", ["ci16_le", "ci8", "cu8"])
def test_integer_datatypes_round_trip_at_their_resolution(tmp_path, datatype):
    x = _iq(3000)
    rec = open_recording(_write(tmp_path / datatype, x, datatype))
    assert rec.datatype == datatype
    assert rec.data_path.stat().st_size == x.size * formats.bytes_per_sample(datatype)
    step = 1 / 32768 if datatype == "ci16_le" else 1 / 127
    clipped = np.clip(x.real, -1, 1) + 1j * np.clip(x.imag, -1, 1)
    assert np.max(np.abs(rec.read() - clipped)) < step


def test_writer_rejects_what_it_owns_and_bad_input(tmp_path):
    with pytest.raises(ValueError, match="core:sample_rate"):
        SigMFWriter(tmp_path / "a", RATE, extra_global={"core:sample_rate": 1.0})
    with pytest.raises(IQFormatError, match="rf32_le"):
        SigMFWriter(tmp_path / "b", RATE, "rf32_le")
    with SigMFWriter(tmp_path / "c", RATE) as writer:
        with pytest.raises(ValueError, match="complex"):
            writer.write(np.zeros(4, dtype=np.float32))
        with pytest.raises(ValueError, match="sample_start"):
            writer.annotate(-1, 10, {})


def _meta(base):
    return base.parent / f"{base.name}.sigmf-meta"


def _data(base):
    return base.parent / f"{base.name}.sigmf-data"


def test_invalid_json_names_the_file_and_the_place(recording):
    base, _ = recording
    _meta(base).write_text('{"global": {"core:datatype": "cf32_le",\n  oops}')
    with pytest.raises(IQFormatError, match=r"rec\.sigmf-meta: invalid JSON at line 2"):
        open_recording(base)


def test_schema_invalid_metadata_names_the_file_and_the_key(recording):
    base, _ = recording
    doc = json.loads(_meta(base).read_text())
    doc["global"]["core:sample_rate"] = "fast"
    _meta(base).write_text(json.dumps(doc))
    with pytest.raises(IQFormatError, match=r"rec\.sigmf-meta: not valid SigMF.*core:sample_rate"):
        open_recording(base)
    del doc["annotations"]
    _meta(base).write_text(json.dumps(doc))
    with pytest.raises(IQFormatError, match="'annotations' must be"):
        open_recording(base)


def test_missing_sample_rate(recording):
    base, _ = recording
    doc = json.loads(_meta(base).read_text())
    del doc["global"]["core:sample_rate"]
    _meta(base).write_text(json.dumps(doc))
    with pytest.raises(IQFormatError, match=r"rec\.sigmf-meta: no core:sample_rate"):
        open_recording(base)


def test_unsupported_datatype_names_the_file_and_lists_supported(recording):
    base, _ = recording
    doc = json.loads(_meta(base).read_text())
    doc["global"]["core:datatype"] = "rf32_le"
    _meta(base).write_text(json.dumps(doc))
    with pytest.raises(IQFormatError, match=r"rec\.sigmf-meta: unsupported SigMF datatype.*cu8"):
        open_recording(base)


def test_truncated_data_file_says_how_many_trailing_bytes(recording):
    base, x = recording
    raw = _data(base).read_bytes()
    _data(base).write_bytes(raw[:-5])  # 5 bytes short: 654 whole samples + 3 bytes
    with pytest.raises(IQFormatError) as err:
        open_recording(base)
    message = str(err.value)
    assert "rec.sigmf-data" in message and "3 trailing bytes" in message
    rec = open_recording(base, strict=False)
    assert rec.trailing_bytes == 3 and rec.num_samples == x.size - 1
    np.testing.assert_array_equal(np.concatenate([c for _, c in rec.iter_chunks(4096)]), x[:-1])


def test_data_ending_before_the_annotations_is_truncated(recording):
    base, _ = recording
    _data(base).write_bytes(_data(base).read_bytes()[: 4000 * 8])
    with pytest.raises(IQFormatError, match="holds 4000 samples but annotations reach sample 5300"):
        open_recording(base)
    assert open_recording(base, strict=False).num_samples == 4000


def test_missing_files_are_source_errors_naming_them(recording, tmp_path):
    base, _ = recording
    _data(base).unlink()
    with pytest.raises(SourceError, match=r"rec\.sigmf-data: SigMF data file not found"):
        open_recording(base)
    with pytest.raises(SourceError, match=r"nothing\.sigmf-meta: SigMF metadata file not found"):
        open_recording(tmp_path / "nothing.sigmf-data")

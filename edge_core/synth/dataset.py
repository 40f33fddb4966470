"""The labelled packet dataset on disk, written in chunks so it never has to fit in memory.

Layout of a dataset directory:

* `iq.npy`: float32 (N, 2, 3000), row 0 I, row 1 Q, memory-mappable (`np.load(mmap_mode="r")`).
* `labels.csv`: header `phy,frame,app_type,app,snr_db`, class names from `edge_core.schema`.
* `packets.csv`: what the generator drew for each packet (subtype, length, rate/MCS, impairments).
* `dataset.json`: provenance (seed, counts, mix, impairments); written last, so its presence
  means the dataset is complete.

Packets are generated in chunks of `CHUNK_PACKETS`, chunk k seeded by SeedSequence([seed, k]),
so the content depends on the seed only, not on the number of worker processes.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_core import __version__
from edge_core.schema import INPUT_LENGTH, SAMPLE_RATE_HZ, TASK_NAMES
from edge_core.synth.generator import generate_packets
from edge_core.synth.impairments import Impairments
from edge_core.synth.traffic import TrafficMix

CHUNK_PACKETS = 512
LABEL_COLUMNS = (*TASK_NAMES, "snr_db")
PACKET_COLUMNS = (
    "subtype",
    "length_bytes",
    "rate",
    "preamble",
    "short_gi",
    "n_samples",
    "cfo_hz",
    "rms_delay_spread_ns",
    "timing_offset_samples",
    "gain_db",
    "iq_amplitude_db",
    "iq_phase_deg",
)

_Chunk = tuple[np.ndarray, list[list[Any]], list[list[Any]]]


def _make_chunk(args: tuple[int, int, int, TrafficMix, Impairments]) -> _Chunk:
    seed, chunk_index, n, mix, impairments = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk_index]))
    iq = np.empty((n, 2, INPUT_LENGTH), dtype=np.float32)  # (n, 2, 3000)
    labels: list[list[Any]] = []
    details: list[list[Any]] = []
    for i, p in enumerate(generate_packets(n, rng, mix, impairments)):
        iq[i, 0] = p.iq.real
        iq[i, 1] = p.iq.imag
        s, d = p.spec, p.draw
        labels.append([s.phy, s.frame, s.app_type, s.app, f"{d.snr_db:.2f}"])
        details.append(
            [s.subtype, s.length_bytes, s.rate, s.preamble if s.phy == "802.11b" else "",
             int(s.short_gi), p.n_samples, f"{d.cfo_hz:.1f}", f"{d.rms_delay_spread_ns:.1f}",
             d.timing_offset_samples, f"{d.gain_db:.2f}", f"{d.iq_amplitude_db:.3f}",
             f"{d.iq_phase_deg:.3f}"]
        )  # fmt: skip
    return iq, labels, details


def _chunks(
    packets: int, seed: int, mix: TrafficMix, impairments: Impairments, workers: int
) -> Iterator[_Chunk]:
    jobs = [
        (seed, k, min(CHUNK_PACKETS, packets - start), mix, impairments)
        for k, start in enumerate(range(0, packets, CHUNK_PACKETS))
    ]
    if workers <= 1:
        yield from map(_make_chunk, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_make_chunk, jobs)


def write_dataset(
    out_dir: str | Path,
    packets: int,
    seed: int,
    mix: TrafficMix | None = None,
    impairments: Impairments | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate `packets` labelled packets into `out_dir` (created; must not hold a dataset)."""
    if packets <= 0:
        raise ValueError(f"packets must be > 0, got {packets}")
    mix = mix or TrafficMix()
    impairments = impairments or Impairments()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "dataset.json").exists():
        raise FileExistsError(f"{out} already holds a dataset (dataset.json); choose another --out")
    (out / "dataset.json.partial").touch()
    iq = np.lib.format.open_memmap(
        out / "iq.npy", mode="w+", dtype=np.float32, shape=(packets, 2, INPUT_LENGTH)
    )
    counts: dict[str, dict[str, int]] = {t: {} for t in TASK_NAMES}
    with (
        open(out / "labels.csv", "w", newline="") as lf,
        open(out / "packets.csv", "w", newline="") as pf,
        tqdm(total=packets, unit="pkt", disable=not progress, desc="synth dataset") as bar,
    ):
        label_writer, packet_writer = csv.writer(lf), csv.writer(pf)
        label_writer.writerow(LABEL_COLUMNS)
        packet_writer.writerow(PACKET_COLUMNS)
        start = 0
        for chunk_iq, labels, details in _chunks(packets, seed, mix, impairments, workers):
            iq[start : start + len(labels)] = chunk_iq
            label_writer.writerows(labels)
            packet_writer.writerows(details)
            for row in labels:
                for task, value in zip(TASK_NAMES, row, strict=False):
                    counts[task][value] = counts[task].get(value, 0) + 1
            start += len(labels)
            bar.update(len(labels))
    iq.flush()
    del iq
    meta = {
        "format": "edge-tc-dataset",
        "format_version": 1,
        "generator": f"edge-tc {__version__} synthetic 802.11",
        "packets": packets,
        "seed": seed,
        "chunk_packets": CHUNK_PACKETS,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "input_length": INPUT_LENGTH,
        "iq_layout": "float32 (N, 2, 3000): row 0 I, row 1 Q; zero post-padded, post-truncated",
        "label_counts": counts,
        "mix": {"phy_by_frame": mix.phy_by_frame, "apps_of_data": mix.apps_of_data},
        "impairments": asdict(impairments),
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "dataset.json.partial").unlink()
    return out


def read_labels(dataset_dir: str | Path) -> list[dict[str, str]]:
    """The rows of `labels.csv` as dicts (small: 500k rows are ~30 MB)."""
    with open(Path(dataset_dir) / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != LABEL_COLUMNS:
            raise ValueError(
                f"{dataset_dir}/labels.csv: header {reader.fieldnames} != {list(LABEL_COLUMNS)}"
            )
        return list(reader)

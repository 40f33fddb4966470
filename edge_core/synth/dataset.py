"""The labelled packet dataset on disk, written in chunks so it never has to fit in memory.

Layout of a dataset directory:

* `iq.npy`: float32 (N, 2, 3000), row 0 I, row 1 Q, memory-mappable (`np.load(mmap_mode="r")`).
* `labels.csv`: header `phy,frame,app_type,app,snr_db`, class names from `edge_core.schema`.
* `packets.csv`: what the generator drew for each packet (subtype, length, rate/MCS, impairments),
  its capture session, station, direction, TID and A-MPDU depth, and what a receiver decodes
  per packet without a CNN: the HT-SIG aggregation bit, the PPDU duration from the SIG fields,
  the received power (RSSI, whole dB) and the receiver's CFO estimate.
* `dataset.json`: provenance (seed, counts, sessions, generator model, mix, impairments); written
  last, so its presence means the dataset is complete.

Packets are drawn as capture sessions (`edge_core.synth.sessions`): one phone, one app, one
position, one rate-control history each. A chunk is a few whole sessions subsampled to
`CHUNK_PACKETS` packets with the mix's (phy, frame, app) proportions (`_make_chunk`); chunk k is
seeded by SeedSequence([seed, k]), so the content depends on the seed only, not on the number of
worker processes, and no session spans two chunks.
"""

from __future__ import annotations

import collections
import csv
import itertools
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_core import __version__
from edge_core.schema import INPUT_LENGTH, SAMPLE_RATE_HZ, TASK_NAMES
from edge_core.synth.generator import duration_samples, synthesize
from edge_core.synth.impairments import Draw, Impairments, impair_packet
from edge_core.synth.sessions import (
    AP,
    MODEL_VERSION,
    NOISE_FLOOR_DBM,
    PHONE,
    Capture,
    Frame,
    draw_session,
    simulate_session,
)
from edge_core.synth.traffic import APP_PROFILES, TrafficMix

CHUNK_PACKETS = 4096
MAX_SESSIONS_PER_APP = 24  # per chunk, while looking for the app's frames (Spotify bursts rarely)
SESSION_STRIDE = 10_000  # session ids: chunk * SESSION_STRIDE + index in the chunk
SESSION_SECONDS = (4.0, 12.0)  # the simulated stretch of each capture session (assumption)
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
    "session",
    "station",
    "uplink",
    "tid",
    "n_mpdu",
    "aggregated",
    "duration_us",
    "rx_power_db",
    "cfo_hz_est",
    "t_us",
    "flow_bytes_1s",
    "flow_frames_1s",
    "flow_down_bytes_1s",
)
"""`t_us`: the frame's start in its capture session (us), as a receiver timestamps it.
`flow_*_1s`: what a receiver that decodes every frame of the session's BSS (lengths from the PHY
header, the station from the clear MAC addresses) counts for this station over the second
ending with this frame, over ALL the session's frames, not only those the dataset keeps: data
PSDU bytes, data frames, and data bytes the AP sent (downlink). The bitrate and ON/OFF timing
that tell applications apart live here (issue 12; `train baselines --flow-window`)."""
FLOW_SECONDS_US = 1e6

Cell = tuple[str, str, str]  # (phy, frame, app)
_Chunk = tuple[np.ndarray, list[list[Any]], list[list[Any]], int, dict[str, int]]


def cell_probabilities(mix: TrafficMix) -> dict[Cell, float]:
    """P(phy, frame, app): Table 4's P(phy, frame) times Table 5's P(app | data); `none` else."""
    pairs, p_pair = mix.joint_table()
    apps, p_app = mix.app_table()
    cells: dict[Cell, float] = {}
    for (phy, frame), pp in zip(pairs, p_pair, strict=True):
        if pp <= 0:
            continue
        if frame == "data":
            for app, pa in zip(apps, p_app, strict=True):
                cells[(phy, frame, app)] = float(pp * pa)
        else:
            cells[(phy, frame, "none")] = float(pp)
    return cells


def _cfo_estimate(spec_phy: str, cfo_hz: float, snr_db: float, rng: np.random.Generator) -> float:
    """What a receiver estimates: the true CFO plus the error of a preamble-based estimator.

    Standard deviation of a repetition-based estimate, 1 / (2 pi T sqrt(N snr)): OFDM uses the
    L-LTF's two 3.2 us periods (N = 64 samples), DSSS the 1 us Barker symbols of the SYNC field
    (N = 11 chips x 100 symbols). A textbook bound, not a particular chipset's estimator.
    """
    period_s, n = (1e-6, 1100) if spec_phy == "802.11b" else (3.2e-6, 64)
    sigma = 1.0 / (2 * np.pi * period_s * np.sqrt(n * 10 ** (snr_db / 10)))
    return cfo_hz + float(rng.normal(0.0, sigma))


def _session_frames(rng: np.random.Generator, app: str, session: int, imp: Impairments) -> Capture:
    params = draw_session(
        rng, app, session, snr_range_db=imp.snr_db, cfo_hz_max=imp.cfo_hz_max,
        rms_delay_spread_ns=imp.rms_delay_spread_ns,
        iq_amplitude_db_max=imp.iq_amplitude_imbalance_db_max,
        iq_phase_deg_max=imp.iq_phase_imbalance_deg_max, duration_s=SESSION_SECONDS,
    )  # fmt: skip
    return simulate_session(params, rng)


def _flow_counters(capture: Capture) -> Callable[[float], tuple[int, int, int]]:
    """t_us -> (data bytes, data frames, downlink data bytes) of the session's BSS (AP and
    phone) in [t_us - 1 s, t_us], from every frame the session simulated."""
    data = [
        f for f in capture.frames if f.spec.frame == "data" and f.bss == 0 and f.tx in (AP, PHONE)
    ]
    t = np.array([f.t_us for f in data], np.float64)
    nbytes = np.concatenate([[0], np.cumsum([f.spec.length_bytes for f in data])])
    down = np.concatenate(
        [[0], np.cumsum([f.spec.length_bytes if f.tx == AP else 0 for f in data])]
    )

    def at(t_us: float) -> tuple[int, int, int]:
        hi = int(np.searchsorted(t, t_us, side="right"))
        lo = int(np.searchsorted(t, t_us - FLOW_SECONDS_US, side="left"))
        return int(nbytes[hi] - nbytes[lo]), hi - lo, int(down[hi] - down[lo])

    return at


def _make_chunk(args: tuple[int, int, int, TrafficMix, Impairments]) -> _Chunk:
    """Chunk k: whole capture sessions, subsampled per (phy, frame, app) cell to the mix.

    Each cell gets a quota (the chunk's packets times the cell's probability, stochastically
    rounded); sessions of each application are simulated until its data cells are filled (at
    most MAX_SESSIONS_PER_APP), then the quotas are drawn uniformly without replacement from the
    frames of the chunk's sessions. This is acceptance sampling with weights target / produced,
    done per chunk so that it needs no pilot run; a cell the sessions cannot fill (for example
    data frames of app `none`, which sessions never produce) is short, and counted.
    """
    seed, chunk_index, n, mix, imp = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk_index]))
    probs = cell_probabilities(mix)
    cells = sorted(probs)
    expected = np.array([probs[c] for c in cells]) * n
    quota = dict(
        zip(
            cells,
            (np.floor(expected) + (rng.random(len(cells)) < expected % 1)).astype(int).tolist(),
            strict=True,
        )
    )
    pools: dict[Cell, list[tuple[int, Frame]]] = {c: [] for c in cells}
    sessions: list[Capture] = []

    def add_session(app: str) -> None:
        capture = _session_frames(rng, app, chunk_index * SESSION_STRIDE + len(sessions), imp)
        for f in capture.frames:
            key = (f.spec.phy, f.spec.frame, f.spec.app)
            if key in pools:
                pools[key].append((len(sessions), f))
        sessions.append(capture)

    def short(pred: Any) -> bool:
        return any(len(pools[c]) < quota[c] for c in cells if pred(c))

    data_apps = sorted({c[2] for c in cells if c[1] == "data" and c[2] in APP_PROFILES})
    for app in data_apps:
        for _ in range(MAX_SESSIONS_PER_APP):
            add_session(app)
            if not short(lambda c, a=app: c[1] == "data" and c[2] == a):
                break
    apps_by_weight = data_apps or sorted(APP_PROFILES)
    for _ in range(MAX_SESSIONS_PER_APP):
        if sessions and not short(lambda c: c[1] != "data"):
            break
        add_session(apps_by_weight[int(rng.integers(0, len(apps_by_weight)))])
    chosen: list[tuple[int, Frame]] = []
    shortfall: dict[str, int] = {}
    for c in cells:
        pool, q = pools[c], quota[c]
        if len(pool) < q:
            shortfall["/".join(c)] = q - len(pool)
        take = rng.choice(len(pool), size=min(q, len(pool)), replace=False) if pool else []
        chosen += [pool[i] for i in take]
    chosen.sort(key=lambda sf: (sf[0], sf[1].t_us))
    flows = [_flow_counters(c) for c in sessions]
    m = len(chosen)
    iq = np.empty((m, 2, INPUT_LENGTH), dtype=np.float32)  # (m, 2, 3000)
    labels: list[list[Any]] = []
    details: list[list[Any]] = []
    lo_off, hi_off = imp.timing_offset_samples
    for i, (si, f) in enumerate(chosen):
        s, radio = f.spec, sessions[si].params.radios[f.tx]
        d = Draw(
            snr_db=f.snr_db, cfo_hz=radio.cfo_hz, rms_delay_spread_ns=radio.rms_delay_spread_ns,
            timing_offset_samples=int(rng.integers(lo_off, hi_off + 1)),
            gain_db=float(rng.uniform(*imp.gain_db)), iq_amplitude_db=radio.iq_amplitude_db,
            iq_phase_deg=radio.iq_phase_deg,
        )  # fmt: skip
        clean = synthesize(s, rng, max_samples=INPUT_LENGTH, bss=sessions[si].bss[f.bss])
        y = impair_packet(clean, d, rng, INPUT_LENGTH)
        iq[i, 0, : y.size] = y.real
        iq[i, 1, : y.size] = y.imag
        iq[i, :, y.size :] = 0.0
        labels.append([s.phy, s.frame, s.app_type, s.app, f"{d.snr_db:.2f}"])
        rssi = round(NOISE_FLOOR_DBM + d.snr_db)  # a receiver reports whole dB
        details.append(
            [s.subtype, s.length_bytes, s.rate, s.preamble if s.phy == "802.11b" else "",
             int(s.short_gi), y.size, f"{d.cfo_hz:.1f}", f"{d.rms_delay_spread_ns:.1f}",
             d.timing_offset_samples, f"{d.gain_db:.2f}", f"{d.iq_amplitude_db:.3f}",
             f"{d.iq_phase_deg:.3f}", s.session, s.station, int(s.uplink), s.tid, f.n_mpdu,
             int(bool(s.mpdu_lengths)), f"{duration_samples(s) / (SAMPLE_RATE_HZ / 1e6):.1f}",
             rssi, f"{_cfo_estimate(s.phy, d.cfo_hz, d.snr_db, rng):.1f}",
             f"{f.t_us:.1f}", *flows[si](f.t_us)]
        )  # fmt: skip
    return iq, labels, details, len(sessions), shortfall


def _chunks(
    packets: int, seed: int, mix: TrafficMix, impairments: Impairments, workers: int
) -> Iterator[_Chunk]:
    """Chunks 0, 1, 2, ... in order, forever (the caller stops); `workers` processes ahead.

    Chunk k asks for what is left of `packets` after k full chunks (at least 64, at most
    CHUNK_PACKETS), so a small dataset does not synthesise a full chunk's IQ."""
    chunk = CHUNK_PACKETS
    jobs = (
        (seed, k, int(np.clip(packets - k * chunk, 64, chunk)), mix, impairments)
        for k in itertools.count()
    )
    if workers <= 1:
        yield from map(_make_chunk, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        ahead: collections.deque[Future[_Chunk]] = collections.deque()
        try:
            while True:
                while len(ahead) < workers + 1:
                    ahead.append(pool.submit(_make_chunk, next(jobs)))
                yield ahead.popleft().result()
        finally:
            for f in ahead:
                f.cancel()


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
        sessions: set[int] = set()
        shortfall: dict[str, int] = {}
        for chunk_iq, labels, details, _, short in _chunks(
            packets, seed, mix, impairments, workers
        ):
            if not labels:
                raise ValueError(
                    "the mix asks only for (phy, frame, app) cells that capture sessions do not "
                    f"produce (short: {sorted(short)})"
                )
            take = min(len(labels), packets - start)
            iq[start : start + take] = chunk_iq[:take]
            label_writer.writerows(labels[:take])
            packet_writer.writerows(details[:take])
            for row in labels[:take]:
                for task, value in zip(TASK_NAMES, row, strict=False):
                    counts[task][value] = counts[task].get(value, 0) + 1
            sessions.update(int(d[PACKET_COLUMNS.index("session")]) for d in details[:take])
            for cell, n in short.items():
                shortfall[cell] = shortfall.get(cell, 0) + n
            start += take
            bar.update(take)
            if start >= packets:
                break
    iq.flush()
    del iq
    meta = {
        "format": "edge-tc-dataset",
        "format_version": 1,
        "generator": f"edge-tc {__version__} synthetic 802.11",
        "generator_model": MODEL_VERSION,
        "sessions": len(sessions),
        "session_seconds": list(SESSION_SECONDS),
        "sampling": "capture sessions, subsampled per (phy, frame, app) to the mix, per chunk",
        "mix_shortfall": shortfall,
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

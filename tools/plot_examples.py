"""Draw one example packet per class (time series and spectrogram) into a PNG.

    python tools/plot_examples.py --out docs/examples.png --seed 1

Rows: each PHY, each frame type, each application (the application type follows from it).
Packets come from the dataset generator at 25-30 dB SNR, as they are fed to the model:
3000 complex samples at 20 Msps, zero post-padded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import signal

from edge_core.schema import APP, FRAME, PHY, SAMPLE_RATE_HZ
from edge_core.synth.generator import LabelledPacket, generate_packets
from edge_core.synth.impairments import Impairments
from edge_core.synth.traffic import TrafficMix

BALANCED = TrafficMix(
    phy_by_frame={f: {p: 1.0 for p in PHY.classes} for f in FRAME.classes},
    apps_of_data={a: 1.0 for a in APP.classes},
)


def pick_examples(seed: int) -> list[tuple[str, LabelledPacket]]:
    rng = np.random.default_rng(seed)
    wanted = [("phy", c) for c in PHY.classes] + [("frame", c) for c in FRAME.classes]
    wanted += [("app", c) for c in APP.classes]
    found: dict[tuple[str, str], LabelledPacket] = {}
    for p in generate_packets(5000, rng, BALANCED, Impairments(snr_db=(25.0, 30.0))):
        for task, label in p.spec.labels.items():
            # An application example must be a data frame (app 'none' from a data frame too).
            if (task, label) in wanted and (task, label) not in found:
                if task != "app" or p.spec.frame == "data":
                    found[(task, label)] = p
        if len(found) == len(wanted):
            break
    return [(f"{t}={c}", found[(t, c)]) for t, c in wanted if (t, c) in found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/examples.png")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    examples = pick_examples(args.seed)
    fig, axes = plt.subplots(len(examples), 2, figsize=(12, 1.6 * len(examples)), squeeze=False)
    t_us = np.arange(3000) / SAMPLE_RATE_HZ * 1e6
    for row, (title, p) in enumerate(examples):
        s = p.spec
        rate = f"MCS {int(s.rate)}" if s.phy == "802.11n" else f"{s.rate:g} Mbps"
        detail = f"{title}  ({s.phy} {s.frame}/{s.subtype}, {s.app}, {s.length_bytes} B, {rate})"
        ax = axes[row, 0]
        ax.plot(t_us, p.iq.real, lw=0.4, label="I")
        ax.plot(t_us, p.iq.imag, lw=0.4, label="Q", alpha=0.7)
        ax.set_title(detail, fontsize=8, loc="left")
        ax.set_xlim(0, t_us[-1])
        ax.tick_params(labelsize=6)
        f, tt, sxx = signal.spectrogram(
            p.iq, fs=SAMPLE_RATE_HZ, nperseg=64, noverlap=48, return_onesided=False
        )
        order = np.argsort(f)
        ax = axes[row, 1]
        ax.pcolormesh(tt * 1e6, f[order] / 1e6, 10 * np.log10(sxx[order] + 1e-12), shading="auto")
        ax.set_ylabel("MHz", fontsize=6)
        ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel("time (us)")
    axes[-1, 1].set_xlabel("time (us)")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(examples)} examples)")


if __name__ == "__main__":
    main()

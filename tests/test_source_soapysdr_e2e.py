"""The SoapySDR source for real: Debian's python3-soapysdr bindings and libSoapySDR load a device
module (tests/soapy_sigmf/SigMFPlayer.cpp, built here against libsoapysdr-dev, found through
SOAPY_SDR_PLUGIN_PATH) that plays a SigMF recording with a real driver's readStream semantics
(MTU-sized reads, timeouts, time stamps, overflow). The daemon reads it at real-time pace: the
packets it detects are exactly those the offline assembler finds in the same samples, every one
is classified and counted, and they match the recording's annotations.

Skips, saying what is missing, without g++, libsoapysdr-dev or python3-soapysdr (apt-get install
g++ libsoapysdr-dev python3-soapysdr)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_core.assembler import AssemblerConfig, PacketAssembler
from edge_core.cli import main
from edge_core.inspect import default_tolerance_samples, match_intervals
from edge_core.iq.sigmf_io import open_recording

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]
MODULE_SOURCE = Path(__file__).parent / "soapy_sigmf" / "SigMFPlayer.cpp"
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
TAIL_SAMPLES = 65536


@pytest.fixture(scope="module")
def soapy(tmp_path_factory) -> dict[str, str]:
    """The environment a process needs: the built module's folder and the bindings alone."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed (apt-get install g++)")
    if not Path("/usr/include/SoapySDR/Device.hpp").is_file():
        pytest.skip("libsoapysdr-dev not installed")
    bindings = sorted(DIST_PACKAGES.glob("_SoapySDR*.so"))
    if not (DIST_PACKAGES / "SoapySDR.py").is_file() or not bindings:
        pytest.skip("python3-soapysdr not installed")
    root = tmp_path_factory.mktemp("soapy")
    modules, pythonpath = root / "modules", root / "python"
    modules.mkdir()
    pythonpath.mkdir()
    built = subprocess.run(
        ["g++", "-std=c++17", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
         "-o", str(modules / "libSigMFPlayer.so"), str(MODULE_SOURCE), "-lSoapySDR"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    # only the binding on the path: Debian's other packages (its NumPy) must not shadow the venv's
    for name in [DIST_PACKAGES / "SoapySDR.py", *bindings]:
        (pythonpath / name.name).symlink_to(name)
    return {"SOAPY_SDR_PLUGIN_PATH": str(modules), "PYTHONPATH": str(pythonpath)}


# The daemon on the device until its detector has had all `samples` of the recording; no step
# waits for a guessed time: the source opens (and the device starts playing) only once the
# subscriber has connected, the daemon stops once its assembler has been fed every sample
# (stop() lets the source finish the chunk in hand, then drains), and the subscriber reads until
# it has as many messages as the daemon classified.
RUN_DAEMON = textwrap.dedent("""
    import json, sys, threading, time
    from edge_daemon.config import DaemonConfig
    from edge_daemon.pipeline import Daemon
    from edge_daemon.publisher import Subscriber

    class GatedOpen:
        \"\"\"The source, opened only once `gate` is set.\"\"\"

        def __init__(self, inner):
            self.inner, self.gate = inner, threading.Event()

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def open(self):
            self.gate.wait()
            self.inner.open()

    device, samples = sys.argv[1], int(sys.argv[2])
    config = DaemonConfig.from_dict({
        "source": {"type": "soapysdr", "device": device, "sample_rate_hz": 20e6,
                   "center_freq_hz": 2.437e9, "gain_db": 30.0, "chunk_samples": 16384},
        "bundle": sys.argv[3],
        "engine": {"type": "onnxruntime", "threads": 1},
        "publisher": {"bind": "tcp://127.0.0.1:*"},
        "metrics": {"enabled": False},
        "power": {"type": "none"},
        "batcher": {"max_batch": 16, "max_queue_delay_ms": 1.0, "queue_size": 4096},
        "ingest": "thread",  # the test gates the source's open, in this process
    }, "")
    daemon = Daemon(config)
    overflows = lambda: daemon.registry.get_sample_value("edgetc_source_overflows_total")
    source = daemon.source = GatedOpen(daemon.source)  # the daemon's, with its events
    received = []
    daemon.start()
    try:
        with Subscriber(daemon.publisher.endpoint) as sub:
            sub.wait_connected()
            source.gate.set()
            deadline = time.monotonic() + 120
            while daemon.assembler is None or daemon.assembler.stats.samples < samples:
                if daemon.failure or overflows():  # samples lost: they never all come
                    break
                assert time.monotonic() < deadline, "the daemon did not get every sample"
                time.sleep(0.01)
            totals = daemon.stop()
            received = sub.collect(count=totals.classified, idle_timeout_s=60)
    finally:
        source.gate.set()  # never leave the source thread waiting to open
        totals = daemon.stop()
    print(json.dumps({
        "detected": totals.detected, "classified": totals.classified, "failed": totals.failed,
        "dropped": totals.dropped, "accounted": totals.accounted,
        "overflows": overflows(),
        "rate": daemon.source.sample_rate_hz, "failure": daemon.failure,
        "packets": [[m.payload["sample_start"], m.payload["sample_end"]] for m in received],
    }))
""")


def run_daemon(soapy: dict[str, str], device: str, samples: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RUN_DAEMON, device, str(samples), str(ROOT / "models" / "default")],
        capture_output=True, text=True, env={**os.environ, **soapy}, cwd=ROOT, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_binding_finds_the_module_and_reads_with_real_semantics(soapy, tmp_path):
    data = tmp_path / "ramp.sigmf-data"
    ramp = (np.arange(10_000) + 1j * np.arange(10_000)).astype(np.complex64)
    ramp.tofile(data)
    probe = textwrap.dedent(f"""
        import json, numpy as np, SoapySDR
        found = SoapySDR.Device.enumerate("driver=sigmfplay,path={data}")
        dev = SoapySDR.Device("driver=sigmfplay,path={data},rate=1e6,pace=fast,mtu=4096")
        rx = SoapySDR.SOAPY_SDR_RX
        stream = dev.setupStream(rx, SoapySDR.SOAPY_SDR_CF32, [0])
        dev.activateStream(stream)
        buf = np.empty(8192, np.complex64)
        out, got = [], []
        for _ in range(4):
            r = dev.readStream(stream, [buf], buf.size, timeoutUs=20000)
            out.append([r.ret, r.flags, r.timeNs])
            if r.ret > 0:
                got.append(buf[: r.ret].copy())
        dev.deactivateStream(stream)
        dev.closeStream(stream)
        samples = np.concatenate(got)
        print(json.dumps({{"found": len(found), "reads": out, "mtu": 4096,
                          "same": bool(np.array_equal(samples, np.load("{tmp_path}/want.npy")))}}))
    """)
    np.save(tmp_path / "want.npy", ramp)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, **soapy}, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["found"] == 1 and result["same"]
    has_time, timeout = 1 << 2, -1  # SOAPY_SDR_HAS_TIME, SOAPY_SDR_TIMEOUT
    rets = [r[0] for r in result["reads"]]
    assert rets == [4096, 4096, 10_000 - 8192, timeout]  # MTU-sized, then the rest, then none
    assert [r[1] & has_time for r in result["reads"][:3]] == [has_time] * 3
    assert [r[2] for r in result["reads"][:3]] == [0, 4_096_000, 8_192_000]  # ns at 1 MS/s


def test_daemon_through_python3_soapysdr_classifies_a_recording(soapy, tmp_path):
    base = tmp_path / "stream"
    assert main(["synth", "stream", "--out", str(base), "--seconds", "0.4", "--seed", "5",
                 "--traffic-scale", "3", "--quiet"]) == 0  # fmt: skip
    rec = open_recording(base)
    samples = np.concatenate([rec.read(), np.zeros(TAIL_SAMPLES, np.complex64)])  # (n,) cf32
    data = tmp_path / "played.sigmf-data"
    samples.astype(np.complex64).tofile(data)
    truth = [(int(a["core:sample_start"]), int(a["core:sample_start"] + a["core:sample_count"]))
             for a in rec.annotations]  # fmt: skip
    assert len(truth) > 200

    config = AssemblerConfig(sample_rate_hz=rec.sample_rate_hz)
    offline = PacketAssembler(config)
    packets = []
    for start in range(0, samples.size, 65536):
        packets += offline.feed(samples[start : start + 65536], start)

    # a driver buffer of 0.4 s: this shared test machine may stall the reader for a while
    device = (f"driver=sigmfplay,path={data},rate={rec.sample_rate_hz},pace=realtime,"
              "mtu=16384,buffer=8388608")  # fmt: skip
    result = run_daemon(soapy, device, samples.size)
    assert result["failure"] is None and result["rate"] == rec.sample_rate_hz
    assert result["overflows"] == 0  # a reader that keeps up sees none
    assert result["detected"] == result["accounted"] == len(packets)
    assert result["classified"] == len(result["packets"]) == result["detected"]
    assert sorted(tuple(p) for p in result["packets"]) == [
        (p.start_sample, p.end_sample) for p in packets
    ]  # the same packets at the same sample indices (the hardware time stamps line up)
    pre = config.pre_trigger_samples
    matched = match_intervals(
        [(s + pre, e) for s, e in result["packets"]], truth, default_tolerance_samples(config)
    )
    missed = len(truth) - len({t for _, t in matched})
    print(f"annotated {len(truth)}, detected {result['detected']}, matched {len(matched)}, "
          f"missed {missed}")  # fmt: skip
    assert missed < 0.1 * len(truth)


def test_a_reader_that_falls_behind_gets_overflows_counted(soapy, tmp_path):
    data = tmp_path / "noise.sigmf-data"
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(4_000_000) + 1j * rng.standard_normal(4_000_000)) * 0.01
    noise.astype(np.complex64).tofile(data)
    probe = textwrap.dedent(f"""
        import json, time
        from edge_daemon.sources.base import NullEvents
        from edge_daemon.sources.soapysdr import SoapySDRSource, SoapySDRSourceConfig

        class Events(NullEvents):
            overflows = 0
            def overflow(self):
                Events.overflows += 1

        source = SoapySDRSource(SoapySDRSourceConfig(
            device="driver=sigmfplay,path={data},rate=20e6,pace=realtime,buffer=200000",
            sample_rate_hz=20e6, chunk_samples=16384), Events())
        source.open()
        first = source.read(1.0)
        time.sleep(0.05)  # 1e6 samples arrive meanwhile: more than the driver's buffer
        after = None
        while after is None or not after.discontinuity:
            after = source.read(1.0)
        source.close()
        print(json.dumps({{"overflows": Events.overflows, "first": first.first_sample_index,
                          "after": after.first_sample_index}}))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, **soapy}, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["overflows"] >= 1
    # the hardware time stamp after the overflow moves the sample index past the lost samples
    assert result["after"] >= 900_000

"""Security defaults: the daemon listens on loopback only unless told otherwise, the publisher
speaks CurveZMQ with key files (checked with real CURVE clients), a tampered bundle is refused
before anything is loaded, and no code loads pickles."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from edge_core.errors import ConfigError
from edge_core.schema import TASKS
from edge_core.typed_config import ConfigProblems
from edge_daemon.config import DaemonConfig
from edge_daemon.pipeline import Daemon
from edge_daemon.publisher import Classified, Publisher, PublisherConfig, decode_payload

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
SHIPPED_BUNDLE = ROOT / "models" / "default"
CODE_DIRS = ("edge_daemon", "engines", "train", "tools")


# -- loopback by default --------------------------------------------------------------------------
def listening_addresses() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket this process listens on (/proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    text = ".".join(str(b) for b in raw[::-1])
                else:  # IPv6: four little-endian 32-bit words
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    text = b"".join(words).hex()
                out.append((text, int(port, 16)))
    return out


def test_defaults_listen_on_loopback_only(tiny_bundle):
    defaults = DaemonConfig.from_dict({"source": {"type": "zmq"}, "bundle": "b"}, "")
    assert defaults.publisher.bind == "tcp://127.0.0.1:5556"
    assert (defaults.metrics.enabled, defaults.metrics.addr) == (True, "127.0.0.1")
    assert defaults.source.mode == "connect"  # the zmq source binds nothing by default
    assert defaults.source.address.startswith("tcp://127.0.0.1:")

    # a real daemon with the default hosts (ports left to the OS so that tests can run side by
    # side): every socket it listens on is on 127.0.0.1
    before = set(listening_addresses())
    host = defaults.publisher.bind.rsplit(":", 1)[0]
    config = DaemonConfig.from_dict(
        {
            "source": {"type": "synthetic", "pace": "realtime", "duration_s": 2.0},
            "bundle": str(tiny_bundle.directory),
            "engine": {"type": "onnxruntime", "threads": 1},
            "publisher": {"bind": f"{host}:*"},
            "metrics": {"port": 0},
            "power": {"type": "none"},
        },
        "",
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        listening = set(listening_addresses()) - before
    finally:
        daemon.stop()
    assert daemon.metrics_server is None  # closed
    ports = {port for _, port in listening}
    assert len(listening) >= 2, listening  # the publisher and the metrics server
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening
    assert int(daemon.publisher.endpoint.rsplit(":", 1)[1]) in ports


# -- CurveZMQ -------------------------------------------------------------------------------------
@pytest.fixture
def certificates(tmp_path):
    """Server, an authorized client (its public key in clients/) and an unknown client."""
    keys = tmp_path / "keys"
    clients = tmp_path / "clients"
    keys.mkdir()
    clients.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(keys, "server")
    client_public, client_secret = zmq.auth.create_certificates(keys, "client")
    shutil.copy(client_public, clients)
    _, intruder_secret = zmq.auth.create_certificates(keys, "intruder")
    return {
        "server_public": server_public, "server_secret": server_secret,
        "clients": clients, "client_secret": client_secret, "intruder_secret": intruder_secret,
    }  # fmt: skip


def curve_subscriber(context, endpoint: str, server_public: str | None, secret: str | None):
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    if secret is not None:
        public_key, secret_key = zmq.auth.load_certificate(secret)
        sub.curve_secretkey, sub.curve_publickey = secret_key, public_key
        sub.curve_serverkey = zmq.auth.load_certificate(server_public)[0]
    sub.setsockopt(zmq.SUBSCRIBE, b"tc.")
    sub.connect(endpoint)
    return sub


def classified(packet_id: int) -> Classified:
    probs = {t.name: np.full(t.num_classes, 1 / t.num_classes, np.float32) for t in TASKS}
    return Classified(packet_id, 0, 3000, time.monotonic(), probs)


def received(socket, timeout_s: float) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if socket.poll(int(left * 1000) + 1):
            out.append(decode_payload(socket.recv_multipart()[1]))
    return out


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_curve_publisher_serves_only_authorized_clients(certificates):
    config = PublisherConfig(
        bind="tcp://127.0.0.1:*",
        curve_secret_key_file=str(certificates["server_secret"]),
        curve_authorized_keys_dir=str(certificates["clients"]),
    )
    publisher = Publisher(config)
    context = zmq.Context()
    endpoint = publisher.endpoint
    client = curve_subscriber(
        context, endpoint, certificates["server_public"], certificates["client_secret"]
    )
    intruder = curve_subscriber(
        context, endpoint, certificates["server_public"], certificates["intruder_secret"]
    )
    plain = curve_subscriber(context, endpoint, None, None)
    try:
        # PUB drops until a subscription arrives: publish until the authorized client hears
        deadline = time.monotonic() + 20
        got: list[dict] = []
        packet_id = 0
        while not got:
            assert time.monotonic() < deadline, "the authorized CURVE client got nothing"
            publisher.publish(classified(packet_id))
            packet_id += 1
            got = received(client, 0.05)
        for i in range(50):
            publisher.publish(classified(packet_id + i))
        got += received(client, 1.0)
        assert got[-1]["packet_id"] == packet_id + 49
        assert received(intruder, 0.5) == [] and received(plain, 0.5) == []
    finally:
        for socket in (client, intruder, plain):
            socket.close()
        context.term()
        publisher.close()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_our_subscriber_and_tc_subscribe_speak_curve(certificates):
    from edge_daemon.publisher import Subscriber

    config = PublisherConfig(
        bind="tcp://127.0.0.1:*",
        curve_secret_key_file=str(certificates["server_secret"]),
        curve_authorized_keys_dir=str(certificates["clients"]),
    )
    publisher = Publisher(config)
    sub = Subscriber(publisher.endpoint, curve_server_key_file=str(certificates["server_public"]),
                     curve_client_key_file=str(certificates["client_secret"]))  # fmt: skip
    try:
        deadline, packet_id, message = time.monotonic() + 20, 0, None
        while message is None:
            assert time.monotonic() < deadline, "the CURVE Subscriber got nothing"
            publisher.publish(classified(packet_id))
            packet_id += 1
            message = sub.recv(0.05)
        assert message.payload["packet_id"] < packet_id
    finally:
        sub.close()
        publisher.close()
    with pytest.raises(ConfigError, match="CURVE server key: cannot read"):
        Subscriber("tcp://127.0.0.1:1", curve_server_key_file="/nonexistent.key")
    with pytest.raises(ConfigError, match="holds no secret key"):
        Subscriber("tcp://127.0.0.1:1", curve_server_key_file=str(certificates["server_public"]),
                   curve_client_key_file=str(certificates["server_public"]))  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tc_subscribe.py"), "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "--curve-server-key" in done.stdout and "--curve-client-key" in done.stdout


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_curve_key_problems_name_the_key(certificates, tmp_path):
    bind = "tcp://127.0.0.1:*"
    with pytest.raises(ConfigError, match=r"publisher\.curve_secret_key_file: cannot read"):
        Publisher(PublisherConfig(bind=bind, curve_secret_key_file=str(tmp_path / "none")))
    with pytest.raises(ConfigError, match=r"curve_secret_key_file: .* holds no secret key"):
        Publisher(
            PublisherConfig(bind=bind, curve_secret_key_file=str(certificates["server_public"]))
        )
    with pytest.raises(ConfigError, match=r"publisher\.curve_authorized_keys_dir: .* not a dir"):
        Publisher(
            PublisherConfig(
                bind=bind,
                curve_secret_key_file=str(certificates["server_secret"]),
                curve_authorized_keys_dir=str(tmp_path / "nowhere"),
            )
        )
    with pytest.raises(ConfigProblems, match=r"publisher\.curve_authorized_keys_dir: needs"):
        DaemonConfig.from_dict(
            {"source": {"type": "zmq"}, "publisher": {"curve_authorized_keys_dir": "/x"}}, ""
        )


# -- bundles --------------------------------------------------------------------------------------
def tampered_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED_BUNDLE, bundle)
    model = bundle / "model_fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    model.write_bytes(bytes(data))
    return bundle


def test_a_tampered_bundle_is_refused_by_edge_tc_run(tmp_path):
    bundle = tampered_bundle(tmp_path)
    config = tmp_path / "edge-tc.toml"
    config.write_text(
        f'bundle = "{bundle}"\n[source]\ntype = "synthetic"\n[publisher]\n'
        'bind = "tcp://127.0.0.1:*"\n[metrics]\nenabled = false\n[power]\ntype = "none"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "edge_core.cli", "run", "--config", str(config),
         "--duration", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # RestartPreventExitStatus=2 in the unit
    assert f"{bundle / 'model_fp32.onnx'}: sha256 " in done.stderr
    assert "does not match the manifest" in done.stderr
    unit = (ROOT / "systemd" / "edge-tc.service").read_text()
    assert "\nRestartPreventExitStatus=2\n" in unit


def test_check_config_refuses_a_tampered_bundle(tmp_path):
    """The unit runs `check-config` before starting: it verifies the hashes as `run` does."""
    bundle = tampered_bundle(tmp_path)
    config = tmp_path / "edge-tc.toml"
    config.write_text(f'bundle = "{bundle}"\n[source]\ntype = "synthetic"\n')
    done = subprocess.run(
        [sys.executable, "-m", "edge_core.cli", "check-config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not match the manifest" in done.stdout + done.stderr


# -- no pickles -----------------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}  # fmt: skip


def pickle_loads(tree: ast.AST) -> list[str]:
    """Imports of pickle-like modules, torch.load without weights_only=True, np.load with
    allow_pickle=True, pandas.read_pickle."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"line {node.lineno}: import {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            call = f"{owner}.{node.func.attr}"
            if call == "torch.load" and keywords.get("weights_only") != "True":
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
            if node.func.attr == "load" and owner in ("np", "numpy"):
                if keywords.get("allow_pickle", "False") != "False":
                    found.append(f"line {node.lineno}: {call}(allow_pickle=...)")
            if node.func.attr == "read_pickle":
                found.append(f"line {node.lineno}: {call}")
    return found


def test_the_scan_finds_pickle_loading():
    code = (
        "import pickle\nfrom joblib import load\nimport torch\ntorch.load(p)\n"
        "torch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\npd.read_pickle(p)\n"
        "torch.load(p, weights_only=True)\nnp.load(p)\n"
    )
    assert len(pickle_loads(ast.parse(code))) == 6


def test_no_code_loads_pickles():
    files = [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 30
    problems = {
        str(p.relative_to(ROOT)): found
        for p in files
        if (found := pickle_loads(ast.parse(p.read_text(), str(p))))
    }
    assert problems == {}
    # and the one torch.load there is, loads weights only
    checkpoint = (ROOT / "train" / "checkpoint.py").read_text()
    assert 'torch.load(path, map_location="cpu", weights_only=True)' in checkpoint

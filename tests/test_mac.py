"""The MAC layer (edge_core/synth/mac.py), read back by receivers that share no code with it:
scapy's 802.11 dissector for every MPDU, an A-MPDU delimiter parser written here from
IEEE 802.11-2016 9.7.1 (bitwise CRC-8), and tshark when it is installed."""

import shutil
import struct
import subprocess

import numpy as np
import pytest
from scapy.layers.dot11 import (
    Dot11Action,
    Dot11AssoReq,
    Dot11AssoResp,
    Dot11Auth,
    Dot11Beacon,
    Dot11CCMP,
    Dot11Elt,
    Dot11EltRSN,
    Dot11FCS,
    Dot11ProbeReq,
    Dot11ProbeResp,
    Dot11QoS,
)

from edge_core.synth import generator, mac
from edge_core.synth.mac import Bss, build_psdu, mgmt_frame_length
from edge_core.synth.traffic import PacketSpec, TrafficMix, mgmt_spec, sample_spec

# IEEE 802.11-2016 Table 9-1, written out here rather than taken from mac.py.
TYPE = {"mgmt": 0, "ctrl": 1, "data": 2}
SUBTYPE = {
    "assoc_req": 0, "assoc_resp": 1, "probe_req": 4, "probe_resp": 5, "beacon": 8, "auth": 11,
    "action": 13, "block_ack_req": 8, "block_ack": 9, "rts": 11, "cts": 12, "ack": 13,
    "data": 0, "null": 4, "qos_data": 8, "qos_null": 12,
}  # fmt: skip
CONTROL_LENGTH = {"ack": 14, "cts": 14, "rts": 20, "block_ack_req": 24, "block_ack": 32}
MGMT = ["beacon", "probe_req", "probe_resp", "auth", "assoc_req", "assoc_resp", "action"]
TO_DS, FROM_DS, PROTECTED = 0x01, 0x02, 0x40


def _bss(seed=0, n=4):
    return Bss.random(np.random.default_rng(seed), n_stations=n)


def _spec(frame, subtype, length, **kw):
    kw.setdefault("phy", "802.11g")
    kw.setdefault("rate", 24.0)
    return PacketSpec(frame=frame, app="none", subtype=subtype, length_bytes=length, **kw)


def _fcs_ok(raw: bytes) -> bool:
    return raw[-4:] == Dot11FCS().compute_fcs(raw[:-4])


def _parse(psdu: np.ndarray) -> Dot11FCS:
    assert psdu.dtype == np.uint8
    raw = psdu.tobytes()
    assert _fcs_ok(raw), "FCS"
    return Dot11FCS(raw)


def _fc_flags(pkt: Dot11FCS) -> int:
    return int(pkt.FCfield)


def _pn(pkt: Dot11FCS) -> int:
    c = pkt[Dot11CCMP]
    return sum(getattr(c, f"PN{i}") << (8 * i) for i in range(6))


def _seq(pkt: Dot11FCS) -> int:
    return int(pkt.SC) >> 4


def _all_frames(bss, rng):
    """(spec, psdu) of every subtype, both directions."""
    out = []
    for uplink in (False, True):
        for s in MGMT:
            spec = _spec(
                "mgmt", s, mgmt_frame_length(s, bss), uplink=uplink, phy="802.11b", rate=1.0
            )
            out.append((spec, build_psdu(spec, bss, rng)))
        for s, n in CONTROL_LENGTH.items():
            spec = _spec("ctrl", s, n, uplink=uplink, station=1)
            out.append((spec, build_psdu(spec, bss, rng)))
        for s, n in [("data", 300), ("qos_data", 1554), ("null", 28), ("qos_null", 30)]:
            spec = _spec("data", s, n, uplink=uplink, station=2, tid=5, phy="802.11n", rate=4.0)
            out.append((spec, build_psdu(spec, bss, rng)))
    return out


def test_every_kind_of_frame_parses_with_a_valid_fcs_and_its_type_and_subtype():
    bss, rng = _bss(), np.random.default_rng(1)
    for spec, psdu in _all_frames(bss, rng):
        assert psdu.size == spec.length_bytes
        pkt = _parse(psdu)
        assert (pkt.proto, pkt.type, pkt.subtype) == (0, TYPE[spec.frame], SUBTYPE[spec.subtype])


def test_control_frames_have_their_exact_lengths_and_addresses():
    bss, rng = _bss(), np.random.default_rng(2)
    sta = mac.mac_str(bss.stations[1])
    ap = mac.mac_str(bss.bssid)
    for uplink in (False, True):
        ta, ra = (sta, ap) if uplink else (ap, sta)
        for s, n in CONTROL_LENGTH.items():
            raw = build_psdu(_spec("ctrl", s, n, uplink=uplink, station=1, tid=6), bss, rng)
            pkt = _parse(raw)
            assert len(raw) == n and pkt.addr1 == ra
            if s not in ("ack", "cts"):
                assert pkt.addr2 == ta
            if s in ("block_ack_req", "block_ack"):
                control, ssc = struct.unpack_from("<HH", raw.tobytes(), 16)
                assert control & 0x0006 == 0x0004  # compressed bitmap, not multi-TID
                assert control >> 12 == 6 and ssc & 0xF == 0
            if s == "block_ack":
                bitmap = struct.unpack_from("<Q", raw.tobytes(), 20)[0]
                assert bitmap & 1  # the first MPDU of the window was received


def test_data_frames_carry_the_bss_addresses_in_to_from_ds_order():
    bss, rng = _bss(), np.random.default_rng(3)
    ap, sta, gw = (mac.mac_str(a) for a in (bss.bssid, bss.stations[3], bss.gateway))
    for uplink in (False, True):
        spec = _spec(
            "data", "qos_data", 700, uplink=uplink, station=3, tid=6, phy="802.11n", rate=3.0
        )
        pkt = _parse(build_psdu(spec, bss, rng))
        flags = _fc_flags(pkt)
        assert flags & PROTECTED
        if uplink:
            assert flags & (TO_DS | FROM_DS) == TO_DS
            assert (pkt.addr1, pkt.addr2, pkt.addr3) == (ap, sta, gw)
        else:
            assert flags & (TO_DS | FROM_DS) == FROM_DS
            assert (pkt.addr1, pkt.addr2, pkt.addr3) == (sta, ap, gw)
        qos = pkt[Dot11QoS]
        assert qos.TID == 6 and qos.Ack_Policy == 0
        ccmp = pkt[Dot11CCMP]
        assert ccmp.ext_iv == 1 and ccmp.key_id == 0
        # body + MIC: 700 - 26 header - 8 CCMP - 4 FCS
        assert len(ccmp.data) == 700 - 26 - 8 - 4
        assert 0 < pkt.ID < 1000  # SIFS + ACK in microseconds


def test_null_frames_are_unprotected_headers_from_the_station():
    bss, rng = _bss(), np.random.default_rng(4)
    for spec in [
        _spec("data", "data", 28),
        _spec("data", "null", 28),
        _spec("data", "qos_null", 30),
    ]:
        raw = build_psdu(spec, bss, rng)
        pkt = _parse(raw)
        assert pkt.subtype in (4, 12) and not _fc_flags(pkt) & PROTECTED
        assert _fc_flags(pkt) & (TO_DS | FROM_DS) == TO_DS


def test_beacon_elements_decode():
    bss, rng = _bss(5), np.random.default_rng(5)
    spec = _spec("mgmt", "beacon", mgmt_frame_length("beacon", bss), phy="802.11b", rate=1.0)
    pkt = _parse(build_psdu(spec, bss, rng))
    assert pkt.addr1 == "ff:ff:ff:ff:ff:ff" and pkt.addr2 == pkt.addr3 == mac.mac_str(bss.bssid)
    assert pkt.ID == 0
    beacon = pkt[Dot11Beacon]
    assert beacon.beacon_interval == 100
    assert beacon.cap.ESS and beacon.cap.privacy
    elements = {}
    elt = pkt[Dot11Elt]
    while isinstance(elt, Dot11Elt):
        elements[elt.ID] = elt
        elt = elt.payload
    assert list(elements) == [0, 1, 3, 5, 42, 50, 48, 45, 61, 221]  # Table 9-27 order
    assert elements[0].info.decode() == bss.ssid
    assert 0x82 in elements[1].rates and 0x0C in elements[1].rates  # 1 Mbps basic, 6 Mbps
    assert elements[3].channel == bss.channel
    assert elements[45].len == 26 and elements[45].Short_GI_20Mhz == 1
    assert elements[61].primary_channel == bss.channel
    rsn = pkt[Dot11EltRSN]
    assert rsn.group_cipher_suite.cipher == 4 and rsn.pairwise_cipher_suites[0].cipher == 4
    assert rsn.akm_suites[0].suite == 2  # PSK
    assert elements[221].info[:5] == b"\x00\x50\xf2\x02\x01"  # WMM parameter element


def test_other_management_frames_decode():
    bss, rng = _bss(6), np.random.default_rng(6)
    ap, sta = mac.mac_str(bss.bssid), mac.mac_str(bss.stations[0])

    def build(s, uplink=False):
        spec = _spec("mgmt", s, mgmt_frame_length(s, bss), uplink=uplink, phy="802.11b", rate=1.0)
        return _parse(build_psdu(spec, bss, rng))

    req = build("probe_req")
    assert req.haslayer(Dot11ProbeReq) and req[Dot11Elt].ID == 0 and req[Dot11Elt].len == 0
    assert (req.addr1, req.addr2, req.addr3) == ("ff:ff:ff:ff:ff:ff", sta, "ff:ff:ff:ff:ff:ff")
    resp = build("probe_resp")
    assert resp.haslayer(Dot11ProbeResp) and resp[Dot11Elt].info.decode() == bss.ssid
    assert (resp.addr1, resp.addr2) == (sta, ap) and resp.ID > 0
    for uplink, seqnum in [(True, 1), (False, 2)]:
        auth = build("auth", uplink)
        assert (auth[Dot11Auth].algo, auth[Dot11Auth].seqnum, auth[Dot11Auth].status) == (
            0,
            seqnum,
            0,
        )
        assert auth.addr2 == (sta if uplink else ap) and auth.addr3 == ap
    assoc = build("assoc_req", uplink=False)  # a station sends it whatever the spec says
    assert assoc.haslayer(Dot11AssoReq) and assoc.addr2 == sta
    assert assoc[Dot11Elt].info.decode() == bss.ssid and assoc.haslayer(Dot11EltRSN)
    resp = build("assoc_resp")
    assert resp.haslayer(Dot11AssoResp) and resp[Dot11AssoResp].status == 0
    assert resp[Dot11AssoResp].AID >> 14 == 3
    action = build("action")
    body = bytes(action[Dot11Action])
    assert action[Dot11Action].category == 3 and body[1] == 0  # Block Ack, ADDBA request
    params = struct.unpack_from("<H", body, 3)[0]
    assert params >> 6 == 64 and params & 0x2  # buffer 64, immediate


def test_a_longer_management_frame_pads_with_elements_and_a_shorter_one_is_refused():
    bss, rng = _bss(7), np.random.default_rng(7)
    n = mgmt_frame_length("beacon", bss)
    for extra in (2, 3, 4, 5, 100, 256, 257, 258, 259, 600):
        pkt = _parse(build_psdu(_spec("mgmt", "beacon", n + extra), bss, rng))
        elt, last = pkt[Dot11Elt], None
        while isinstance(elt, Dot11Elt):
            last, elt = elt, elt.payload
        assert last is not None and not bytes(elt)  # elements run exactly to the FCS
    for bad in (n - 1, n + 1):
        with pytest.raises(ValueError, match="beacon"):
            build_psdu(_spec("mgmt", "beacon", bad), bss, rng)


def test_packet_numbers_count_per_transmitter_and_sequence_numbers_per_station_and_tid():
    bss, rng = _bss(8), np.random.default_rng(8)
    pns: dict[str, list[int]] = {}
    seqs: dict[tuple, list[int]] = {}
    order = [(False, 0, 0), (True, 0, 0), (True, 1, 0), (False, 1, 5), (False, 0, 5)] * 30
    for i in rng.permutation(len(order)):
        uplink, sta, tid = order[i]
        spec = _spec(
            "data", "qos_data", 200, uplink=uplink, station=sta, tid=tid, phy="802.11n", rate=2.0
        )
        pkt = _parse(build_psdu(spec, bss, rng))
        pns.setdefault(pkt.addr2, []).append(_pn(pkt))
        seqs.setdefault((pkt.addr2, pkt.addr1, pkt[Dot11QoS].TID), []).append(_seq(pkt))
    assert len(pns) == 3 and len(seqs) == 5  # AP, two stations; five (TA, RA, TID)
    for pn in pns.values():
        assert np.all(np.diff(pn) == 1)
    assert len(pns[mac.mac_str(bss.bssid)]) == 90
    for seq in seqs.values():
        assert np.all(np.diff(seq) % 4096 == 1)


def test_sequence_numbers_wrap_at_4096():
    bss, rng = _bss(9), np.random.default_rng(9)
    spec = _spec("data", "qos_data", 200, station=1, tid=3, phy="802.11n", rate=2.0)
    first = _seq(_parse(build_psdu(spec, bss, rng)))
    got = [_seq(_parse(build_psdu(spec, bss, rng))) for _ in range(4096 - first + 1)]
    assert got[-3:] == [4095, 0, 1]


# --- A-MPDU: an independent delimiter parser --------------------------------------------------
def _crc8_bits(bits):
    """CRC-8 of 9.7.1 / 19.3.9.4.4: x^8+x^2+x+1, shift register preset to ones, output
    complemented, c7 first (list of 8 bits)."""
    c = [1] * 8
    for b in bits:
        fb = b ^ c[7]
        c = [fb, c[0] ^ fb, c[1] ^ fb, c[2], c[3], c[4], c[5], c[6]]
    return [1 - x for x in reversed(c)]


def _parse_ampdu(raw: bytes):
    """[(mpdu bytes, eof bit)], checking delimiter CRC, signature and padding."""
    out, i = [], 0
    while i < len(raw):
        d = raw[i : i + 4]
        bits = [(d[k // 8] >> (k % 8)) & 1 for k in range(32)]
        assert bits[16:24] == _crc8_bits(bits[:16]), f"delimiter CRC at {i}"
        assert d[3] == 0x4E, f"signature at {i}"
        length = sum(bits[4 + k] << k for k in range(12)) | (bits[2] | bits[3] << 1) << 12
        mpdu = raw[i + 4 : i + 4 + length]
        assert len(mpdu) == length
        out.append((mpdu, bits[0]))
        i += 4 + length
        if i < len(raw):
            pad = -i % 4
            assert raw[i : i + pad] == bytes(pad)
            i += pad
    return out


def _independent_ampdu_length(lengths):
    return sum(-(-(4 + n) // 4) * 4 for n in lengths[:-1]) + 4 + lengths[-1]


def test_delimiter_crc_matches_a_known_delimiter():
    # The CRC shares the HT-SIG CRC's definition (802.11-2016 19.3.9.4.4); the OFDM module's
    # HT-SIG CRC is checked against the standard's HT-SIG example elsewhere.
    from edge_core.synth.ofdm import crc8_ht_sig

    for length in (0, 1, 14, 94, 1554, 4095):
        d = mac.ampdu_delimiter(length)
        bits = [(d[k // 8] >> (k % 8)) & 1 for k in range(32)]
        assert bits[16:24] == _crc8_bits(bits[:16]) == list(crc8_ht_sig(np.array(bits[:16])))


@pytest.mark.parametrize("lengths", [(1554,), (94, 1554, 97, 1554), tuple([1554] * 40 + [99])])
def test_ampdu_subframes_parse(lengths):
    bss, rng = _bss(10), np.random.default_rng(10)
    for uplink in (False, True):
        n = _independent_ampdu_length(list(lengths))
        spec = _spec(
            "data",
            "qos_data",
            n,
            mpdu_lengths=lengths,
            uplink=uplink,
            station=2,
            tid=5,
            phy="802.11n",
            rate=7.0,
        )
        raw = build_psdu(spec, bss, rng).tobytes()
        assert len(raw) == n
        sub = _parse_ampdu(raw)
        assert [len(m) for m, _ in sub] == list(lengths) and not any(eof for _, eof in sub)
        pkts = [Dot11FCS(m) for m, _ in sub]
        assert all(_fcs_ok(m) for m, _ in sub)
        assert all(
            p.subtype == 8 and p[Dot11QoS].Ack_Policy == 0 and p[Dot11QoS].TID == 5 for p in pkts
        )
        assert np.all(np.diff([_seq(p) for p in pkts]) % 4096 == 1)
        assert np.all(np.diff([_pn(p) for p in pkts]) == 1)
        assert len({p.ID for p in pkts}) == 1 and pkts[0].ID > 0  # one NAV: SIFS + BlockAck


def test_bad_specs_are_refused_with_the_spec_named():
    bss, rng = _bss(), np.random.default_rng(11)
    bad = [
        _spec("ctrl", "ack", 20),
        _spec("ctrl", "beacon", 100),
        _spec("data", "qos_data", 40),
        _spec("data", "qos_data", 1000, mpdu_lengths=(500, 500)),
        _spec("data", "data", 100, mpdu_lengths=(96,)),
        _spec("data", "qos_data", 200, station=4),
        _spec("data", "qos_data", 5000, mpdu_lengths=(4996,)),
    ]
    for spec in bad:
        with pytest.raises(ValueError, match="PacketSpec"):
            build_psdu(spec, bss, rng)


def test_management_lengths_from_a_bss_free_spec_still_build():
    # mgmt_spec without a BSS takes the length from a random one; synthesize() without a BSS
    # draws one whose SSID makes that length fit.
    rng = np.random.default_rng(12)
    for _ in range(40):
        for s in ("beacon", "probe_resp", "probe_req", "assoc_req"):
            spec = mgmt_spec("802.11b", s, 20.0, rng)
            psdu = build_psdu(spec, mac.default_bss(spec, rng), rng)
            assert _parse(psdu).subtype == SUBTYPE[s] and psdu.size == spec.length_bytes


def test_generated_packets_carry_parseable_frames(monkeypatch):
    built = []

    def recording_build(spec, bss, rng):
        psdu = build_psdu(spec, bss, rng)
        built.append((spec, psdu))
        return psdu

    monkeypatch.setattr(generator, "build_psdu", recording_build)
    rng = np.random.default_rng(13)
    packets = list(generator.generate_packets(300, rng))
    assert len(built) == len(packets) == 300
    assert {s.frame for s, _ in built} == {"mgmt", "ctrl", "data"}
    for spec, psdu in built:
        assert psdu.size == spec.length_bytes
        raw = psdu.tobytes()
        if spec.mpdu_lengths:
            mpdus = [m for m, _ in _parse_ampdu(raw)]
        else:
            mpdus = [raw]
        for m in mpdus:
            assert _fcs_ok(m)
            assert Dot11FCS(m).type == TYPE[spec.frame]


def test_one_bss_across_a_sampled_stream_advances_its_counters():
    rng, bss = np.random.default_rng(14), _bss(14)
    mix = TrafficMix()
    beacons = []
    for _ in range(400):
        spec = sample_spec(rng, mix, 25.0, bss)
        psdu = build_psdu(spec, bss, rng)
        if spec.mpdu_lengths:  # an HT data A-MPDU: every subframe's MPDU parses
            for mpdu, _ in _parse_ampdu(psdu.tobytes()):
                _parse(np.frombuffer(mpdu, dtype=np.uint8))
            continue
        pkt = _parse(psdu)
        if spec.subtype == "beacon":
            beacons.append(pkt)
    assert len(beacons) >= 10
    assert np.all(np.diff([_seq(p) for p in beacons]) % 4096 >= 1)
    assert np.all(np.diff([p[Dot11Beacon].timestamp for p in beacons]) == 102400)


def _pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105)  # LINKTYPE_IEEE802_11
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", i, 0, len(f), len(f)) + f
    return out


@pytest.mark.skipif(
    shutil.which("tshark") is None, reason="tshark not installed (apt-get install tshark)"
)
def test_tshark_decodes_every_kind_of_frame(tmp_path):
    bss, rng = _bss(15), np.random.default_rng(15)
    frames = _all_frames(bss, rng)
    path = tmp_path / "frames.pcap"
    path.write_bytes(_pcap([p.tobytes() for _, p in frames]))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "wlan.check_fcs:TRUE", "-o", "wlan.check_checksum:TRUE",
         "-T", "fields", "-E", "separator=,", "-e", "wlan.fc.type", "-e", "wlan.fc.subtype",
         "-e", "wlan.fcs.status", "-e", "wlan.ssid", "-e", "_ws.malformed"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) == len(frames)
    for (spec, _), line in zip(frames, out, strict=True):
        ftype, subtype, fcs, ssid, malformed = line.split(",")[:5]
        assert (int(ftype), int(subtype)) == (TYPE[spec.frame], SUBTYPE[spec.subtype]), line
        assert fcs == "1" and not malformed, line
        if spec.subtype in ("beacon", "probe_resp"):
            assert ssid in (bss.ssid, bss.ssid.encode().hex())  # text or hex by version

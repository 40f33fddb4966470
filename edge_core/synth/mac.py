"""The MAC layer under every synthetic PSDU: IEEE 802.11-2016 clause 9 frames of one BSS.

WPA2 (CCMP) encrypts only the frame body of data frames. Everything else a receiver sees is in
clear, and is built here field by field:

* the MAC header (9.2.4): Frame Control (protocol 0, type, subtype, To/From DS, Retry,
  Power Management, Protected), Duration/ID (the NAV of the exchange: SIFS + ACK or
  BlockAck for unicast frames, 0 for broadcast), the addresses of one BSS in the order
  To/From DS gives them (9.3.2.1, Table 9-26), Sequence Control (per transmitter, and per
  receiver and TID for QoS data, 10.3.2.11, modulo 4096), QoS Control (TID, ack policy);
* the CCMP header (12.5.3.2: PN0 PN1 reserved KeyID|ExtIV PN2..PN5; the 48-bit PN counts up
  per frame its transmitter protects) and the 8-byte MIC: only the encrypted body and the MIC
  are random bytes;
* control frames at their exact lengths (9.3.1): ACK and CTS 14 B, RTS 20 B, compressed
  BlockAckReq 24 B and BlockAck 32 B;
* management frames with real bodies (9.3.3, elements of 9.4.2): beacon and probe response
  (timestamp, beacon interval 100 TU, capability, SSID, supported rates, DS parameter set,
  TIM (beacon), ERP, extended rates, HT Capabilities, HT Operation, RSN (CCMP, PSK), WMM
  parameter element), probe request, open-system authentication, association request and
  response, and the ADDBA request action frame (9.6.5.2);
* the FCS: CRC-32 of the whole MPDU (9.2.4.8), little-endian;
* A-MPDUs (9.7): per subframe a 4-byte delimiter (EOF/reserved, 14-bit MPDU length, CRC-8
  over the first 16 bits, signature 0x4E), the MPDU, and padding to a 4-byte multiple except
  after the last subframe.

`Bss` holds the state a real BSS carries from frame to frame (sequence numbers, packet
numbers, TSF); `build_psdu` turns a `PacketSpec` into the PSDU bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_core.synth.traffic import PacketSpec

AP = -1  # transmitter id of the access point; stations are 0..n-1
BROADCAST = b"\xff" * 6
FCS_BYTES = 4
CCMP_HEADER_BYTES = 8
MIC_BYTES = 8
LLC_SNAP_BYTES = 8  # the smallest plaintext a data frame carries (encrypted with the rest)
MAX_HT_AMPDU_MPDU_BYTES = 4095  # 12-bit MPDU length of an HT A-MPDU delimiter
DELIMITER_SIGNATURE = 0x4E
BEACON_INTERVAL_TU = 100
TU_US = 1024

# (type, subtype) per 9.2.4.1.3 Table 9-1, keyed by the generator's subtype names.
FRAME_TYPES = {"mgmt": 0, "ctrl": 1, "data": 2}
SUBTYPES: dict[str, tuple[str, int]] = {
    "assoc_req": ("mgmt", 0),
    "assoc_resp": ("mgmt", 1),
    "probe_req": ("mgmt", 4),
    "probe_resp": ("mgmt", 5),
    "beacon": ("mgmt", 8),
    "auth": ("mgmt", 11),
    "action": ("mgmt", 13),
    "block_ack_req": ("ctrl", 8),
    "block_ack": ("ctrl", 9),
    "rts": ("ctrl", 11),
    "cts": ("ctrl", 12),
    "ack": ("ctrl", 13),
    "data": ("data", 0),
    "null": ("data", 4),
    "qos_data": ("data", 8),
    "qos_null": ("data", 12),
}
CONTROL_FRAME_BYTES = {"ack": 14, "cts": 14, "rts": 20, "block_ack_req": 24, "block_ack": 32}
QOS_SUBTYPES = {"qos_data", "qos_null"}
# Management frames sent only by the AP or only by a station; auth and action follow the spec.
AP_SENDS = {"beacon", "probe_resp", "assoc_resp"}
STATION_SENDS = {"probe_req", "assoc_req"}

# Element IDs (9.4.2.1 Table 9-77).
EID_SSID, EID_RATES, EID_DS, EID_TIM, EID_ERP = 0, 1, 3, 5, 42
EID_HT_CAP, EID_RSN, EID_EXT_RATES, EID_HT_OP, EID_EXT_CAP, EID_VENDOR = 45, 48, 50, 61, 127, 221
VENDOR_OUI = bytes([0x00, 0x10, 0x18])  # Broadcom, whose chipsets add vendor elements

# An ERP/HT AP on 2.4 GHz: 1, 2, 5.5, 11 Mbps basic (0x80 bit), 6..54 Mbps supported.
SUPPORTED_RATES = bytes([0x82, 0x84, 0x8B, 0x96, 0x0C, 0x12, 0x18, 0x24])
EXTENDED_RATES = bytes([0x30, 0x48, 0x60, 0x6C])
# Capability Information (9.4.1.4): ESS, Privacy, Short Preamble, Short Slot Time.
CAPABILITY = 0x0001 | 0x0010 | 0x0020 | 0x0400
# HT Capabilities element body (9.4.2.56), one spatial stream, 20 MHz: HT Capability
# Information (SM power save disabled, short GI 20 MHz, Rx STBC 1), A-MPDU parameters (max
# length 65,535 B, no start spacing), Rx MCS 0-7, Tx MCS set defined, no TxBF/ASEL.
HT_CAP_INFO = 0x000C | 0x0020 | 0x0100
HT_CAPABILITIES = (
    struct.pack("<HB", HT_CAP_INFO, 0x03)
    + bytes([0xFF] + [0] * 9)  # Rx MCS bitmask: MCS 0-7
    + struct.pack("<H", 0)  # Rx highest supported data rate: not given
    + bytes([0x01, 0, 0, 0])  # Tx MCS set defined, equal to Rx
    + struct.pack("<HIB", 0, 0, 0)  # HT extended capabilities, TxBF, ASEL
)
# RSN element body (9.4.2.25): version 1, group CCMP, pairwise CCMP, AKM PSK (00-0F-AC:2).
RSN = (
    struct.pack("<H", 1)
    + bytes([0x00, 0x0F, 0xAC, 4])
    + struct.pack("<H", 1)
    + bytes([0x00, 0x0F, 0xAC, 4])
    + struct.pack("<H", 1)
    + bytes([0x00, 0x0F, 0xAC, 2])
    + struct.pack("<H", 0x000C)  # RSN capabilities: 16 PTKSA replay counters
)
WMM_OUI = bytes([0x00, 0x50, 0xF2, 0x02])  # Microsoft OUI, WMM/WME type
# WMM parameter element: subtype 1, version 1, QoS info, reserved, then AC_BE, AC_BK, AC_VI,
# AC_VO records (ACI/AIFSN, ECWmin/ECWmax, TXOP limit in 32 us), the usual EDCA defaults.
WMM_PARAMETER = (
    WMM_OUI
    + bytes([0x01, 0x01, 0x00, 0x00])
    + bytes([0x03, 0xA4])
    + struct.pack("<H", 0)
    + bytes([0x27, 0xA4])
    + struct.pack("<H", 0)
    + bytes([0x42, 0x43])
    + struct.pack("<H", 94)
    + bytes([0x62, 0x32])
    + struct.pack("<H", 47)
)
WMM_INFO = WMM_OUI + bytes([0x00, 0x01, 0x00])  # information element: subtype 0, version 1

# Vendor OUIs of real access points and phones (Wireshark's manuf list). Phones mostly use
# randomised, locally administered addresses (Android 10+, iOS 14+).
AP_OUIS = ("00:31:92", "00:09:5B", "00:04:0E", "00:15:6D", "00:0C:6E", "00:12:BF", "00:0E:59")
PHONE_OUIS = ("00:03:93", "00:00:F0", "00:1A:11", "00:18:82")
SSID_NAMES = ("HOME", "FRITZ!Box 7590", "NETGEAR", "TP-Link", "Livebox", "eduroam-lab", "Office")


def _mac(rng: np.random.Generator, oui: str | None) -> bytes:
    tail = bytes(rng.integers(0, 256, size=3, dtype=np.uint8))
    if oui is None:  # locally administered unicast: bit 1 of the first octet set, bit 0 clear
        head = bytes(rng.integers(0, 256, size=3, dtype=np.uint8))
        return bytes([(head[0] & 0xFC) | 0x02]) + head[1:] + tail
    return bytes.fromhex(oui.replace(":", "")) + tail


def mac_str(addr: bytes) -> str:
    """aa:bb:cc:dd:ee:ff."""
    return ":".join(f"{b:02x}" for b in addr)


@dataclass
class Bss:
    """One infrastructure BSS: its AP, its stations, and what they count from frame to frame."""

    bssid: bytes
    ssid: str
    channel: int
    stations: list[bytes]
    gateway: bytes  # the router behind the AP: source/destination of the stations' traffic
    tsf_us: int = 0  # the AP's TSF timer at its next beacon
    aid_base: int = 1  # association ID of station 0
    # (transmitter, receiver or None, TID or None) -> last sequence number sent (10.3.2.11)
    seq: dict[tuple[int, int | None, int | None], int] = field(default_factory=dict)
    pn: dict[int, int] = field(default_factory=dict)  # transmitter -> last CCMP PN sent

    def __post_init__(self) -> None:
        for name, addr in [("bssid", self.bssid), ("gateway", self.gateway)] + [
            (f"stations[{i}]", s) for i, s in enumerate(self.stations)
        ]:
            if len(addr) != 6 or addr[0] & 0x01:
                raise ValueError(f"Bss {name}: want a 6-byte unicast address, got {addr.hex()}")
        if not self.stations:
            raise ValueError("Bss stations: want at least one station")
        if not 1 <= len(self.ssid.encode()) <= 32:
            raise ValueError(f"Bss ssid: want 1..32 bytes, got {self.ssid!r}")
        if not 1 <= self.channel <= 14:
            raise ValueError(f"Bss channel: want a 2.4 GHz channel 1..14, got {self.channel}")

    @classmethod
    def random(cls, rng: np.random.Generator, n_stations: int = 4) -> Bss:
        """A BSS as found in a home or office: a vendor AP on channel 1, 6 or 11, and phones."""
        if n_stations < 1:
            raise ValueError(f"Bss.random n_stations: want >= 1, got {n_stations}")
        oui = AP_OUIS[int(rng.integers(len(AP_OUIS)))]
        stations = []
        for _ in range(n_stations):
            randomised = rng.random() < 0.7
            stations.append(
                _mac(rng, None if randomised else PHONE_OUIS[int(rng.integers(len(PHONE_OUIS)))])
            )
        name = SSID_NAMES[int(rng.integers(len(SSID_NAMES)))]
        return cls(
            bssid=_mac(rng, oui),
            ssid=f"{name}-{int(rng.integers(0, 1 << 16)):04X}",
            channel=int(rng.choice([1, 6, 11])),
            stations=stations,
            gateway=_mac(rng, oui),
            tsf_us=int(rng.integers(1, 1 << 40)),
            aid_base=int(rng.integers(1, 20)),
        )

    def address(self, who: int) -> bytes:
        return self.bssid if who == AP else self.stations[who]

    def next_seq(
        self, rng: np.random.Generator, tx: int, rx: int | None = None, tid: int | None = None
    ) -> int:
        """The next 12-bit sequence number of `tx`'s counter for (rx, tid) (None: shared)."""
        key = (tx, rx, tid)
        prev = self.seq.get(key)
        self.seq[key] = int(rng.integers(0, 4096)) if prev is None else (prev + 1) % 4096
        return self.seq[key]

    def next_pn(self, rng: np.random.Generator, tx: int) -> int:
        """The next 48-bit CCMP packet number of transmitter `tx`."""
        prev = self.pn.get(tx)
        # A PN starts at 1 at each key installation; a running link has sent some frames.
        self.pn[tx] = int(rng.integers(1, 1 << 20)) if prev is None else (prev + 1) % (1 << 48)
        return self.pn[tx]


# --- timing (for Duration/ID) ------------------------------------------------------------------
SIFS_DSSS_US = 10
SIFS_OFDM_US = 16  # 10 us SIFS + 6 us signal extension of ERP-OFDM at 2.4 GHz
OFDM_BASIC_RATES = (6, 12, 24)
HT_MCS_LEGACY_EQUIVALENT = (6, 12, 18, 24, 36, 48, 54, 54)


def _sifs_us(phy: str) -> int:
    return SIFS_DSSS_US if phy == "802.11b" else SIFS_OFDM_US


def _response_us(spec: PacketSpec, n_bytes: int) -> int:
    """Airtime of a control response of `n_bytes` to `spec` (at a basic rate, 10.7.6.5)."""
    if spec.phy == "802.11b":
        rate = 2.0 if spec.rate >= 2.0 else 1.0
        preamble = 96 if spec.preamble == "short" else 192
        return preamble + math.ceil(8 * n_bytes / rate)
    rate = spec.rate if spec.phy == "802.11g" else HT_MCS_LEGACY_EQUIVALENT[int(spec.rate)]
    basic = max([r for r in OFDM_BASIC_RATES if r <= rate] or [6])
    return 20 + 4 * math.ceil((16 + 8 * n_bytes + 6) / (4 * basic))


def _nav(spec: PacketSpec, response_bytes: int) -> int:
    return _sifs_us(spec.phy) + _response_us(spec, response_bytes)


# --- frame pieces ----------------------------------------------------------------------------
def _frame_control(
    subtype: str,
    to_ds: bool = False,
    from_ds: bool = False,
    pwr_mgt: bool = False,
    protected: bool = False,
) -> bytes:
    kind, code = SUBTYPES[subtype]
    b0 = (FRAME_TYPES[kind] << 2) | (code << 4)  # protocol version 0 in bits 0-1
    b1 = int(to_ds) | int(from_ds) << 1 | int(pwr_mgt) << 4 | int(protected) << 6
    return bytes([b0, b1])


def _with_fcs(mpdu: bytes) -> bytes:
    return mpdu + struct.pack("<I", zlib.crc32(mpdu))


def _element(eid: int, body: bytes) -> bytes:
    if len(body) > 255:
        raise ValueError(f"element {eid}: body of {len(body)} B exceeds 255")
    return bytes([eid, len(body)]) + body


def _ccmp_header(pn: int, key_id: int = 0) -> bytes:
    p = pn.to_bytes(6, "little")  # PN0 (least significant) .. PN5
    return bytes([p[0], p[1], 0, 0x20 | key_id << 6, p[2], p[3], p[4], p[5]])


def _random_bytes(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()


def _ht_operation(bss: Bss) -> bytes:
    # Primary channel, HT Operation Information (20 MHz, no protection needed), basic MCS set.
    return bytes([bss.channel]) + bytes(5) + bytes(16)


def _beacon_body(bss: Bss, subtype: str) -> bytes:
    # Elements in the order of 9.3.3.3 Table 9-27 (probe response: Table 9-34).
    body = struct.pack("<QHH", bss.tsf_us, BEACON_INTERVAL_TU, CAPABILITY)
    body += _element(EID_SSID, bss.ssid.encode())
    body += _element(EID_RATES, SUPPORTED_RATES)
    body += _element(EID_DS, bytes([bss.channel]))
    if subtype == "beacon":
        # DTIM count 0, DTIM period 1, bitmap control 0, an empty partial virtual bitmap.
        body += _element(EID_TIM, bytes([0, 1, 0, 0]))
    body += _element(EID_ERP, bytes([0x00]))
    body += _element(EID_EXT_RATES, EXTENDED_RATES)
    body += _element(EID_RSN, RSN)
    body += _element(EID_HT_CAP, HT_CAPABILITIES)
    body += _element(EID_HT_OP, _ht_operation(bss))
    body += _element(EID_VENDOR, WMM_PARAMETER)
    return body


def _mgmt_body(subtype: str, bss: Bss, station: int, uplink: bool, seq_hint: int = 0) -> bytes:
    if subtype in ("beacon", "probe_resp"):
        return _beacon_body(bss, subtype)
    if subtype == "probe_req":
        return (
            _element(EID_SSID, b"")  # wildcard SSID: any network may answer
            + _element(EID_RATES, SUPPORTED_RATES)
            + _element(EID_EXT_RATES, EXTENDED_RATES)
            + _element(EID_HT_CAP, HT_CAPABILITIES)
        )
    if subtype == "auth":
        # Open System (algorithm 0): transaction 1 from the station, 2 (status 0) from the AP.
        return struct.pack("<HHH", 0, 1 if uplink else 2, 0)
    if subtype == "assoc_req":
        return (
            struct.pack("<HH", CAPABILITY, 10)  # listen interval: 10 beacon intervals
            + _element(EID_SSID, bss.ssid.encode())
            + _element(EID_RATES, SUPPORTED_RATES)
            + _element(EID_EXT_RATES, EXTENDED_RATES)
            + _element(EID_RSN, RSN)
            + _element(EID_HT_CAP, HT_CAPABILITIES)
            + _element(EID_VENDOR, WMM_INFO)
        )
    if subtype == "assoc_resp":
        aid = (bss.aid_base + station) % 2008 or 1
        return (
            struct.pack("<HHH", CAPABILITY, 0, 0xC000 | aid)  # status success, AID
            + _element(EID_RATES, SUPPORTED_RATES)
            + _element(EID_EXT_RATES, EXTENDED_RATES)
            + _element(EID_HT_CAP, HT_CAPABILITIES)
            + _element(EID_HT_OP, _ht_operation(bss))
            + _element(EID_VENDOR, WMM_PARAMETER)
        )
    if subtype == "action":
        # ADDBA Request (9.6.5.2): category 3 (Block Ack), action 0, dialog token, Block Ack
        # Parameter Set (immediate policy, TID 0, buffer 64), timeout 0, starting sequence.
        params = 0x0002 | (0 << 2) | (64 << 6)
        return struct.pack("<BBBHHH", 3, 0, 1 + station % 255, params, 0, (seq_hint % 4096) << 4)
    raise ValueError(f"no management body for subtype {subtype!r}")


MGMT_HEADER_BYTES = 24


def mgmt_frame_length(subtype: str, bss: Bss) -> int:
    """MPDU length (incl. FCS) of management frame `subtype` in `bss`; fixed for a BSS."""
    if SUBTYPES.get(subtype, ("", 0))[0] != "mgmt":
        raise ValueError(f"mgmt_frame_length: {subtype!r} is not a management subtype")
    return MGMT_HEADER_BYTES + len(_mgmt_body(subtype, bss, 0, True)) + FCS_BYTES


# --- A-MPDU ------------------------------------------------------------------------------------
def _reverse8(b: int) -> int:
    return int(f"{b:08b}"[::-1], 2)


def delimiter_crc8(first16: int) -> int:
    """Delimiter CRC (9.7.1; generator x^8+x^2+x+1, register preset to ones, complemented),
    over delimiter bits B0..B15 in transmit order; returns the octet as it sits in the
    delimiter (its bit 0 is the first transmitted CRC bit, c7)."""
    crc = 0xFF
    for byte in (first16 & 0xFF, first16 >> 8):
        crc ^= _reverse8(byte)  # bit B0 goes in first: feed it as the register's MSB
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return _reverse8(crc ^ 0xFF)


def ampdu_delimiter(mpdu_length: int, eof: bool = False) -> bytes:
    """4-byte MPDU delimiter: EOF, reserved, MPDU length (B2-B3 high bits, B4-B15 low 12),
    CRC-8, signature 0x4E."""
    if not 0 <= mpdu_length < 1 << 14:
        raise ValueError(f"MPDU length {mpdu_length} does not fit the 14-bit delimiter field")
    first16 = int(eof) | (mpdu_length >> 12 & 0x3) << 2 | (mpdu_length & 0xFFF) << 4
    return struct.pack("<H", first16) + bytes([delimiter_crc8(first16), DELIMITER_SIGNATURE])


def ampdu_length(mpdu_lengths: list[int] | tuple[int, ...]) -> int:
    """PSDU length of an A-MPDU: 4 B delimiter per subframe, each padded to 4 B but the last."""
    total = 0
    for i, n in enumerate(mpdu_lengths):
        sub = 4 + n
        total += sub if i == len(mpdu_lengths) - 1 else (sub + 3) // 4 * 4
    return total


def ampdu(mpdus: list[bytes]) -> bytes:
    """Delimit and pad MPDUs into an HT A-MPDU."""
    out = bytearray()
    for i, m in enumerate(mpdus):
        if len(m) > MAX_HT_AMPDU_MPDU_BYTES:
            raise ValueError(
                f"A-MPDU subframe {i}: MPDU of {len(m)} B exceeds the HT limit of "
                f"{MAX_HT_AMPDU_MPDU_BYTES} B"
            )
        out += ampdu_delimiter(len(m)) + m
        if i < len(mpdus) - 1:
            out += bytes(-len(out) % 4)
    return bytes(out)


# --- frames ------------------------------------------------------------------------------------
def _data_mpdu(
    spec: PacketSpec,
    bss: Bss,
    rng: np.random.Generator,
    length: int,
    subtype: str,
    uplink: bool,
    duration: int,
) -> bytes:
    """One data MPDU of `length` bytes (incl. FCS) between the AP and spec.station."""
    sta = spec.station
    qos = subtype in QOS_SUBTYPES
    null = subtype in ("null", "qos_null")
    tx = sta if uplink else AP
    if uplink:  # To DS: RA = BSSID, TA = SA = station, DA = the router behind the AP
        addrs = bss.bssid + bss.stations[sta] + bss.gateway
    else:  # From DS: RA = DA = station, TA = BSSID, SA = the router
        addrs = bss.stations[sta] + bss.bssid + bss.gateway
    if qos:
        seq = bss.next_seq(rng, tx, AP if uplink else sta, spec.tid)
    else:
        seq = bss.next_seq(rng, tx)
    # Power Management: a station's null frames announce dozing (half of them) or waking.
    pwr_mgt = null and uplink and bool(rng.random() < 0.5)
    header = (
        _frame_control(subtype, uplink, not uplink, pwr_mgt, protected=not null)
        + struct.pack("<H", duration)
        + addrs
        + struct.pack("<H", seq << 4)
    )
    if qos:  # TID, EOSP 0, ack policy 00 (normal ACK, or implicit BlockAckReq in an A-MPDU)
        header += struct.pack("<H", spec.tid & 0x0F)
    if null:
        return _with_fcs(header)
    body = length - len(header) - CCMP_HEADER_BYTES - MIC_BYTES - FCS_BYTES
    mpdu = header + _ccmp_header(bss.next_pn(rng, tx)) + _random_bytes(rng, body + MIC_BYTES)
    return _with_fcs(mpdu)


def _data_min_length(subtype: str) -> int:
    header = 26 if subtype in QOS_SUBTYPES else 24
    if subtype in ("null", "qos_null"):
        return header + FCS_BYTES
    return header + CCMP_HEADER_BYTES + LLC_SNAP_BYTES + MIC_BYTES + FCS_BYTES


def _data_psdu(spec: PacketSpec, bss: Bss, rng: np.random.Generator) -> bytes:
    subtype = spec.subtype
    null_length = _data_min_length("null" if subtype == "data" else "qos_null")
    if subtype in ("data", "qos_data") and spec.length_bytes == null_length:
        # The traffic model's 28 B "data" frame is a Null frame (power-save signalling).
        subtype = "null" if subtype == "data" else "qos_null"
    uplink = spec.uplink or subtype in ("null", "qos_null")  # stations send null frames
    if spec.mpdu_lengths:
        if subtype != "qos_data":
            raise ValueError(f"{spec}: an A-MPDU carries qos_data MPDUs, not {subtype!r}")
        if ampdu_length(spec.mpdu_lengths) != spec.length_bytes:
            raise ValueError(
                f"{spec}: length_bytes {spec.length_bytes} is not the A-MPDU length "
                f"{ampdu_length(spec.mpdu_lengths)} of mpdu_lengths"
            )
        lengths = list(spec.mpdu_lengths)
        duration = _nav(spec, CONTROL_FRAME_BYTES["block_ack"])  # implicit BlockAckReq
    else:
        lengths = [spec.length_bytes]
        duration = _nav(spec, CONTROL_FRAME_BYTES["ack"])
    for n in lengths:
        if spec.mpdu_lengths and n > MAX_HT_AMPDU_MPDU_BYTES:
            raise ValueError(
                f"{spec}: an MPDU of {n} B exceeds the HT A-MPDU subframe limit of "
                f"{MAX_HT_AMPDU_MPDU_BYTES} B"
            )
        if n < _data_min_length(subtype):
            raise ValueError(
                f"{spec}: an MPDU of {n} B cannot hold a {subtype} frame "
                f"(at least {_data_min_length(subtype)} B)"
            )
    mpdus = [_data_mpdu(spec, bss, rng, n, subtype, uplink, duration) for n in lengths]
    return ampdu(mpdus) if spec.mpdu_lengths else mpdus[0]


def _control_psdu(spec: PacketSpec, bss: Bss, rng: np.random.Generator) -> bytes:
    want = CONTROL_FRAME_BYTES[spec.subtype]
    if spec.length_bytes != want:
        raise ValueError(f"{spec}: a {spec.subtype} frame is {want} B, not {spec.length_bytes}")
    sta = bss.stations[spec.station]
    ta, ra = (sta, bss.bssid) if spec.uplink else (bss.bssid, sta)
    sifs = _sifs_us(spec.phy)
    fc = _frame_control(spec.subtype)
    if spec.subtype == "ack":
        return _with_fcs(fc + struct.pack("<H", 0) + ra)
    if spec.subtype in ("rts", "cts"):
        # The NAV covers the protected exchange: data (its airtime drawn), SIFS, BlockAck.
        cts_us = _response_us(spec, CONTROL_FRAME_BYTES["cts"])
        data_us = int(rng.integers(100, 5485))
        nav = data_us + 2 * sifs + _response_us(spec, CONTROL_FRAME_BYTES["block_ack"])
        if spec.subtype == "cts":
            return _with_fcs(fc + struct.pack("<H", nav) + ra)
        return _with_fcs(fc + struct.pack("<H", nav + sifs + cts_us) + ra + ta)
    # Compressed BlockAckReq / BlockAck (9.3.1.8, 9.3.1.9): BAR/BA Control (immediate ack
    # policy 0, Multi-TID 0, Compressed Bitmap 1, TID), Starting Sequence Control.
    control = 0x0004 | (spec.tid & 0x0F) << 12
    originator = AP if spec.uplink else spec.station  # the BA answers the other side's data
    last = bss.seq.get((originator, spec.station if originator == AP else AP, spec.tid))
    if last is None:
        last = int(rng.integers(0, 4096))
    received = int(rng.integers(1, 65))  # MPDUs the window covers
    start = (last - received + 1) % 4096
    if spec.subtype == "block_ack_req":
        duration = _nav(spec, CONTROL_FRAME_BYTES["block_ack"])
        return _with_fcs(
            fc + struct.pack("<H", duration) + ra + ta + struct.pack("<HH", control, start << 4)
        )
    bitmap = (1 << received) - 1
    return _with_fcs(
        fc + struct.pack("<H", 0) + ra + ta + struct.pack("<HHQ", control, start << 4, bitmap)
    )


def _mgmt_psdu(spec: PacketSpec, bss: Bss, rng: np.random.Generator) -> bytes:
    subtype = spec.subtype
    uplink = subtype in STATION_SENDS or (spec.uplink and subtype not in AP_SENDS)
    sta = bss.stations[spec.station]
    tx = spec.station if uplink else AP
    if subtype == "beacon":
        addr1, addr3 = BROADCAST, bss.bssid
    elif subtype == "probe_req":
        addr1, addr3 = BROADCAST, BROADCAST  # wildcard BSSID
    else:
        addr1, addr3 = (bss.bssid if uplink else sta), bss.bssid
    duration = 0 if addr1 == BROADCAST else _nav(spec, CONTROL_FRAME_BYTES["ack"])
    seq = bss.next_seq(rng, tx)
    ba_seq = bss.seq.get((tx, spec.station if tx == AP else AP, spec.tid), 0)
    body = _mgmt_body(subtype, bss, spec.station, uplink, ba_seq + 1)
    if subtype == "beacon":
        bss.tsf_us += BEACON_INTERVAL_TU * TU_US
    header = (
        _frame_control(subtype)
        + struct.pack("<H", duration)
        + addr1
        + bss.address(tx)
        + addr3
        + struct.pack("<H", seq << 4)
    )
    extra = spec.length_bytes - len(header) - len(body) - FCS_BYTES
    if extra < 0 or extra == 1:
        raise ValueError(
            f"{spec}: a {subtype} frame of this BSS is {len(header) + len(body) + FCS_BYTES} B; "
            f"length_bytes {spec.length_bytes} cannot hold it (or leaves 1 B, too few for an "
            "element)"
        )
    # A longer frame carries vendor-specific elements (WPS, chipset vendors' IEs do this) and,
    # for 2-4 leftover bytes, an Extended Capabilities element.
    while extra > 0:
        if extra <= 4:
            body += _element(EID_EXT_CAP, bytes(extra - 2))
            break
        n = min(extra, 257)
        if extra - n == 1:
            n -= 2
        body += _element(EID_VENDOR, VENDOR_OUI + _random_bytes(rng, n - 5))
        extra -= n
    return _with_fcs(header + body)


SSID_SUBTYPES = ("beacon", "probe_resp", "assoc_req")  # management frames that carry the SSID


def default_bss(spec: PacketSpec, rng: np.random.Generator) -> Bss:
    """A random BSS that `spec` fits: enough stations, and for a management frame drawn
    without a BSS (its length from another network) an SSID whose length makes it fit."""
    bss = Bss.random(rng, n_stations=max(4, spec.station + 1))
    if spec.frame == "mgmt" and spec.subtype in SSID_SUBTYPES:
        want = len(bss.ssid) + spec.length_bytes - mgmt_frame_length(spec.subtype, bss)
        # Past 32 bytes the rest goes into padding elements, which cannot take a single byte.
        n = 31 if want == 33 else int(np.clip(want, 1, 32))
        bss.ssid = (bss.ssid + "-" * 32)[:n] if n > len(bss.ssid) else bss.ssid[:n]
    return bss


def build_psdu(spec: PacketSpec, bss: Bss, rng: np.random.Generator) -> np.ndarray:
    """The PSDU bytes of `spec` in `bss` (uint8, exactly spec.length_bytes long).

    Advances the BSS's sequence numbers, packet numbers and TSF; raises ValueError naming the
    spec when its fields cannot make a valid frame."""
    kind = SUBTYPES.get(spec.subtype, ("?", 0))[0]
    if kind != spec.frame:
        raise ValueError(f"{spec}: subtype {spec.subtype!r} is not a {spec.frame!r} frame")
    if not 0 <= spec.station < len(bss.stations):
        raise ValueError(f"{spec}: station {spec.station} is not in a BSS of {len(bss.stations)}")
    if not 0 <= spec.tid <= 15:
        raise ValueError(f"{spec}: tid {spec.tid} is not 0..15")
    if kind == "data":
        psdu = _data_psdu(spec, bss, rng)
    elif kind == "ctrl":
        psdu = _control_psdu(spec, bss, rng)
    else:
        psdu = _mgmt_psdu(spec, bss, rng)
    if len(psdu) != spec.length_bytes:  # a bug here, not in the spec
        raise AssertionError(f"{spec}: built {len(psdu)} B")
    return np.frombuffer(psdu, dtype=np.uint8).copy()

"""What a sniffer checks in a decoded PSDU (IEEE 802.11-2016 clause 9), written independently of
`edge_core.synth.mac`: A-MPDU delimiters (9.7.1), the FCS (9.2.4.8) and Frame Control (9.2.4.1).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .ofdm_rx import crc8_ht_sig  # 9.7.1 uses the HT-SIG CRC-8 (19.3.9.4.4) over B0..B15

# 9.2.4.1.3 Table 9-1: (type, subtype) by name.
FRAME_TYPE = {"mgmt": 0, "ctrl": 1, "data": 2}
SUBTYPE: dict[str, tuple[int, int]] = {
    "assoc_req": (0, 0),
    "assoc_resp": (0, 1),
    "reassoc_req": (0, 2),
    "reassoc_resp": (0, 3),
    "probe_req": (0, 4),
    "probe_resp": (0, 5),
    "beacon": (0, 8),
    "atim": (0, 9),
    "disassoc": (0, 10),
    "auth": (0, 11),
    "deauth": (0, 12),
    "action": (0, 13),
    "block_ack_req": (1, 8),
    "block_ack": (1, 9),
    "ps_poll": (1, 10),
    "rts": (1, 11),
    "cts": (1, 12),
    "ack": (1, 13),
    "cf_end": (1, 14),
    "data": (2, 0),
    "null": (2, 4),
    "qos_data": (2, 8),
    "qos_null": (2, 12),
}
# A data frame too short for a body is sent as its Null variant (power-save signalling).
_ALSO = {"data": {"null"}, "qos_data": {"qos_null"}}
DELIMITER_SIGNATURE = 0x4E


class MacError(Exception):
    """The PSDU is not a well-formed MPDU / A-MPDU; the message says where."""


@dataclass(frozen=True)
class Mpdu:
    raw: bytes
    fcs_ok: bool
    type: int
    subtype: int


def delimiter_crc_ok(delim: bytes) -> bool:
    """CRC-8 over delimiter bits B0..B15 (LSB of each octet first), c7 sent first."""
    bits = np.unpackbits(np.frombuffer(delim[:2], np.uint8), bitorder="little")
    crc = crc8_ht_sig(bits)  # (8,) c7 first
    return int(np.sum(crc.astype(int) << np.arange(8))) == delim[2]


def split_ampdu(psdu: bytes) -> list[bytes]:
    """MPDUs of an A-MPDU: delimiter (EOF, reserved, 14-bit length, CRC-8, 0x4E), MPDU, pad."""
    out: list[bytes] = []
    o = 0
    while o + 4 <= len(psdu):
        d = psdu[o : o + 4]
        if d[3] != DELIMITER_SIGNATURE or not delimiter_crc_ok(d):
            raise MacError(f"A-MPDU: no valid delimiter at byte {o} ({d.hex()})")
        first16 = d[0] | d[1] << 8
        length = (first16 >> 4) & 0xFFF | ((first16 >> 2) & 0x3) << 12
        o += 4
        if length == 0:
            continue  # a padding delimiter
        if o + length > len(psdu):
            raise MacError(f"A-MPDU: subframe at byte {o - 4} runs past the PSDU ({length} B)")
        out.append(psdu[o : o + length])
        o += length
        o += -o % 4
    if not out:
        raise MacError("A-MPDU holds no MPDU")
    return out


def parse_mpdu(raw: bytes) -> Mpdu:
    if len(raw) < 14:
        raise MacError(f"MPDU of {len(raw)} B is shorter than the shortest frame (ACK, 14 B)")
    fcs_ok = zlib.crc32(raw[:-4]) == int.from_bytes(raw[-4:], "little")
    fc = raw[0]
    if fc & 0x3:
        raise MacError(f"Frame Control protocol version {fc & 3}, not 0")
    return Mpdu(raw, fcs_ok, (fc >> 2) & 0x3, fc >> 4)


def check_frames(psdu: bytes, aggregated: bool, frame: str, subtype: str) -> str:
    """'' if every MPDU has a valid FCS and a Frame Control that agrees with the label
    (`frame` type; `subtype` where it is a Table 9-1 name), else the first problem."""
    try:
        mpdus = [parse_mpdu(m) for m in (split_ampdu(psdu) if aggregated else [psdu])]
    except MacError as e:
        return str(e)
    allowed = {subtype} | _ALSO.get(subtype, set())
    want = {SUBTYPE[s] for s in allowed if s in SUBTYPE}
    for i, m in enumerate(mpdus):
        if not m.fcs_ok:
            return f"MPDU {i}: FCS fails"
        if m.type != FRAME_TYPE[frame]:
            return f"MPDU {i}: Frame Control type {m.type}, label {frame!r}"
        if want and (m.type, m.subtype) not in want:
            got = (m.type, m.subtype)
            return f"MPDU {i}: Frame Control (type, subtype) {got}, label {subtype!r}"
    return ""

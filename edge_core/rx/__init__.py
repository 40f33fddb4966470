"""Per-packet 802.11 receiver parts that run in the daemon (issue 12): PHY header decoding."""

from edge_core.rx.headers import HEADER_FIELDS, decode_headers

__all__ = ["HEADER_FIELDS", "decode_headers"]

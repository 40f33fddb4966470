"""Capture sessions against the figures `traffic.APP_PROFILES` cites."""

import dataclasses
import itertools

import numpy as np
import pytest

from edge_core.synth import sessions, traffic
from edge_core.synth.sessions import AP, PHONE, draw_session, simulate_session

OH = traffic.MAC_OVERHEAD_BYTES
APPS = tuple(traffic.APP_PROFILES)


def _ip_sizes(frame):
    return [n - OH for n in (frame.spec.mpdu_lengths or (frame.spec.length_bytes,))]


def _session(app, seed=0, **override):
    rng = np.random.default_rng(seed)
    p = draw_session(rng, app, session=seed, duration_s=(30.0, 30.0))
    p = dataclasses.replace(p, **{"link_snr_db": 28.0, "path_mbps": 40.0, **override})
    return simulate_session(p, rng)


def _stats(capture):
    """Per-app figures of one session: the ones the report quotes."""
    frames, seconds = capture.frames, capture.params.duration_s
    data = [f for f in frames if f.spec.frame == "data"]
    down = [f for f in data if not f.spec.uplink]
    up = [f for f in data if f.spec.uplink]
    down_ip = [n for f in down for n in _ip_sizes(f)]
    up_ip = [n for f in up for n in _ip_sizes(f)]
    ht_down = [f for f in down if f.spec.phy == "802.11n"]
    return {
        "frames_per_s": len(frames) / seconds,
        "data_frames_per_s": len(data) / seconds,
        "mean_ampdu_depth": float(np.mean([f.n_mpdu for f in ht_down])) if ht_down else 0.0,
        "uplink_share": len(up) / max(1, len(data)),
        "downlink_kbps": sum(down_ip) * 8 / seconds / 1e3,
        "acks_per_down_packet": sum(1 for n in up_ip if n <= 80) / max(1, len(down_ip)),
        "down_ip": down_ip,
        "up_ip": up_ip,
    }


# Steady state: a full buffer (start_phase 1) so the session plays at its bitrate.
@pytest.mark.parametrize("app", ["tunein", "youtube", "netflix", "twitch"])
def test_steady_state_downlink_rate_is_the_media_bitrate(app):
    profile = traffic.APP_PROFILES[app]
    for bitrate in (profile.bitrates_kbps[0], profile.bitrates_kbps[-1]):
        capture = _session(app, bitrate_kbps=bitrate, start_phase=1.0, duration_s=60.0)
        kbps = _stats(capture)["downlink_kbps"]
        # IP headers add 3.6% (TCP) / 4.4% (QUIC); segments and playlists add granularity.
        assert 0.9 * bitrate <= kbps <= 1.25 * bitrate, (app, bitrate, kbps)


def test_spotify_320_kbps_over_many_tracks():
    capture = _session("spotify", bitrate_kbps=320.0, duration_s=1500.0, start_phase=0.5)
    kbps = _stats(capture)["downlink_kbps"]
    assert 0.7 * 320 <= kbps <= 1.4 * 320  # whole-track bursts: +-1 track in ~7


def test_a_player_starting_with_the_capture_fetches_at_once():
    for app in APPS:
        data = [
            f
            for f in _session(app, start_phase=0.0, duration_s=3.0).frames
            if f.spec.frame == "data"
        ]
        assert sum(not f.spec.uplink for f in data) >= 10, app


def test_podcast_download_runs_at_the_path_rate_and_streaming_at_the_bitrate():
    download = _stats(_session("gpodcast", podcast_download=True, path_mbps=8.0))
    stream = _stats(_session("gpodcast", podcast_download=False, bitrate_kbps=128.0))
    assert 6000 <= download["downlink_kbps"] <= 8500
    assert 100 <= stream["downlink_kbps"] <= 170


@pytest.mark.parametrize("app", ["netflix", "twitch", "tunein", "gpodcast"])
def test_tcp_apps_send_1500_b_segments_and_52_b_acks_one_per_two_segments(app):
    s = _stats(_session(app, bitrate_kbps=max(traffic.APP_PROFILES[app].bitrates_kbps)))
    assert max(s["down_ip"]) == 1500
    acks = [n for n in s["up_ip"] if n <= 80]
    assert set(acks) == {52}
    # Delayed ACK: one per two segments, plus one per pushed (last) segment of a response.
    assert 0.45 <= s["acks_per_down_packet"] <= (0.75 if app != "tunein" else 1.05)


def test_youtube_runs_quic_packets_of_at_most_1378_b_and_decimated_acks():
    s = _stats(_session("youtube", bitrate_kbps=2428.0))
    assert max(s["down_ip"]) == traffic.QUIC_FULL_IP_BYTES == 1378
    assert all(60 <= n <= 80 for n in s["up_ip"] if n <= 80)
    # One ACK per 2 packets for the first 100, then one per 10.
    assert 0.09 <= s["acks_per_down_packet"] <= 0.2


def test_aggregation_stays_within_ht_limits_and_grows_with_the_downlink_rate():
    depth = {}
    # TuneIn in steady state (after its burst on connect), Netflix filling its buffer.
    for app, bitrate, phase in (("tunein", 64.0, 0.5), ("netflix", 5800.0, 0.0)):
        capture = _session(app, bitrate_kbps=bitrate, start_phase=phase, path_mbps=60.0)
        for f in capture.frames:
            if f.spec.mpdu_lengths:
                assert f.spec.phy == "802.11n" and f.spec.frame == "data"
                assert len(f.spec.mpdu_lengths) <= traffic.AMPDU_MAX_SUBFRAMES
                assert f.spec.length_bytes <= traffic.AMPDU_MAX_BYTES
                assert f.duration_us <= traffic.PPDU_MAX_US
        depth[app] = _stats(capture)["mean_ampdu_depth"]
    assert depth["tunein"] < 1.3 < 4.0 < depth["netflix"]


def test_responses_follow_their_frames_sifs_later_at_control_rates():
    frames = _session("netflix", start_phase=0.0).frames
    pairs = 0
    for a, b in itertools.pairwise(frames):
        if (
            abs(b.t_us - (a.t_us + a.duration_us) - sessions.SIFS_US) < 1e-6
            and a.spec.frame == "data"
        ):
            pairs += 1
            assert b.spec.frame == "ctrl" and b.spec.app == "none"
            assert b.spec.subtype == ("block_ack" if a.spec.mpdu_lengths else "ack")
            assert b.spec.uplink != a.spec.uplink
            assert b.spec.phy == ("802.11b" if a.spec.phy == "802.11b" else "802.11g")
    assert pairs > 100


def test_beacons_every_102_4_ms_at_1_mbps_dsss():
    frames = _session("tunein").frames
    beacons = [f for f in frames if f.spec.subtype == "beacon" and f.tx == AP]
    gaps = np.diff([f.t_us for f in beacons])
    assert np.median(gaps) == pytest.approx(sessions.BEACON_INTERVAL_US, abs=400)
    assert {(f.spec.phy, f.spec.rate, f.spec.preamble) for f in beacons} == {
        ("802.11b", 1.0, "long")
    }


def test_labels_follow_table_5_no_app_is_management_and_control_only():
    for app in APPS:
        for f in _session(app, start_phase=0.0, duration_s=5.0).frames:
            assert (f.spec.app == app) == (f.spec.frame == "data")
            assert f.spec.tid == 0  # unmarked best-effort traffic, whatever the app
            assert f.spec.session == 0


def test_radio_fingerprints_do_not_depend_on_the_app():
    drawn = {app: draw_session(np.random.default_rng(3), app, 0) for app in APPS}
    first = drawn[APPS[0]]
    for p in drawn.values():
        assert p.radios == first.radios
        assert (p.link_snr_db, p.path_mbps, p.rtt_ms) == (
            first.link_snr_db,
            first.path_mbps,
            first.rtt_ms,
        )
    rng = np.random.default_rng(4)
    radios = [draw_session(rng, "netflix", k).radios for k in range(300)]
    cfo = np.array([r[i].cfo_hz for r in radios for i in (AP, PHONE)])
    assert np.abs(cfo).max() <= 40e-6 * sessions.CARRIER_HZ
    power = {i: np.mean([r[i].tx_power_dbm for r in radios]) for i in (AP, PHONE)}
    assert power[AP] - power[PHONE] == pytest.approx(5.0, abs=1.0)  # direction is visible


def test_rate_control_tracks_the_link_snr():
    def ht_mcs(snr):
        frames = _session("netflix", link_snr_db=snr, start_phase=0.0, duration_s=8.0).frames
        mcs = [f.spec.rate for f in frames if f.spec.frame == "data" and f.spec.phy == "802.11n"]
        return np.median(mcs)

    assert ht_mcs(8.0) <= 2 < 6 <= ht_mcs(32.0)


def test_per_app_figures(capsys):
    """The table the README quotes (pytest tests/test_sessions.py -k figures -s): the mean of
    three sessions per app, each with its drawn bitrate, path and phase, link SNR 28 dB."""
    keys = (
        "frames_per_s",
        "data_frames_per_s",
        "mean_ampdu_depth",
        "uplink_share",
        "downlink_kbps",
    )
    rows = []
    for app in APPS:
        # Spotify fetches a whole track every 3-4 min: a longer window.
        seconds = 600.0 if app == "spotify" else 120.0
        stats = [_stats(_session(app, seed=k, duration_s=seconds)) for k in range(3)]
        rows.append((app, {key: float(np.mean([s[key] for s in stats])) for key in keys}))
        assert all(s["data_frames_per_s"] > 0 for s in stats)
    with capsys.disabled():
        print("\napp       frames/s data/s  depth  uplink  kbps")
        for app, s in rows:
            print(
                f"{app:9s} {s['frames_per_s']:8.1f} {s['data_frames_per_s']:6.1f} "
                f"{s['mean_ampdu_depth']:6.2f} {s['uplink_share']:6.2f} {s['downlink_kbps']:7.0f}"
            )

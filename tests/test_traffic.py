from collections import Counter

import numpy as np
import pytest

from edge_core import schema
from edge_core.synth import traffic
from edge_core.synth.traffic import TrafficMix, sample_spec


def _specs(n=20000, seed=1, mix=None):
    rng = np.random.default_rng(seed)
    mix = mix or TrafficMix()
    return [sample_spec(rng, mix, float(rng.uniform(5, 30))) for _ in range(n)]


def test_every_sampled_packet_obeys_the_dataset_rules():
    for s in _specs(5000):
        schema.check_labels(s.phy, s.frame, s.app_type, s.app)
        assert s.length_bytes > 0


def test_default_mix_matches_tables_4_and_5():
    specs = _specs()
    n = len(specs)
    joint = Counter((s.phy, s.frame) for s in specs)
    total4 = 466348
    for frame, row in traffic.TABLE4_PHY_BY_FRAME.items():
        for phy, count in row.items():
            expected = count / total4
            assert abs(joint[(phy, frame)] / n - expected) < 4 * np.sqrt(expected / n) + 1e-3
    data = [s for s in specs if s.frame == "data"]
    apps = Counter(s.app for s in data)
    total5 = sum(traffic.TABLE5_APPS_OF_DATA.values())
    for app, count in traffic.TABLE5_APPS_OF_DATA.items():
        expected = count / total5
        assert abs(apps[app] / len(data) - expected) < 4 * np.sqrt(expected / len(data)) + 1e-3
    # No application outside data frames (Table 5: No-App is all Mgmt/Ctrl).
    assert all(s.app == "none" for s in specs if s.frame != "data")


def test_custom_mix_is_honoured_and_validated():
    only_video = TrafficMix(
        phy_by_frame={"mgmt": {}, "ctrl": {}, "data": {"802.11n": 1.0}},
        apps_of_data={"youtube": 1.0, "netflix": 1.0},
    )
    specs = _specs(500, mix=only_video)
    assert {s.app for s in specs} == {"youtube", "netflix"}
    assert {s.app_type for s in specs} == {"video"}
    with pytest.raises(ValueError, match="unknown apps"):
        TrafficMix(apps_of_data={"tiktok": 1.0})
    with pytest.raises(ValueError, match="phy_by_frame needs"):
        TrafficMix(phy_by_frame={"data": {"802.11n": 1.0}})


def test_control_frames_have_their_standard_lengths():
    rng = np.random.default_rng(0)
    for subtype, length in {"ack": 14, "cts": 14, "rts": 20, "block_ack": 32}.items():
        spec = traffic.control_spec("802.11g", subtype, 20.0, rng)
        assert spec.length_bytes == length
        assert spec.rate in traffic.LEGACY_BASIC_RATES


def test_rate_adaptation_rises_with_snr():
    rng = np.random.default_rng(0)
    low = np.mean([traffic.pick_ht_mcs(3.0, rng) for _ in range(2000)])
    high = np.mean([traffic.pick_ht_mcs(28.0, rng) for _ in range(2000)])
    assert low < 1.0 < 6.0 < high


def test_ampdu_framing_and_airtime_cap():
    assert traffic.ampdu_length([1554]) == 1558
    assert traffic.ampdu_length([1554, 1554]) == 1560 + 1558  # first subframe padded to 4 B
    rng = np.random.default_rng(3)
    for _ in range(2000):
        s = traffic.data_spec("802.11n", "netflix", 3.0, rng, downlink=True)
        rate = traffic.HT_MCS_RATE_MBPS[int(s.rate)]
        assert s.length_bytes * 8 / rate <= 5000 or s.length_bytes < 1700


def test_uplink_acks_are_small_and_downlink_bulk_is_mss_sized():
    rng = np.random.default_rng(0)
    up = [traffic.app_frame_length("netflix", rng, downlink=False) for _ in range(200)]
    down = [traffic.app_frame_length("netflix", rng, downlink=True) for _ in range(200)]
    assert max(up) <= 64 + traffic.MAC_OVERHEAD_BYTES
    assert Counter(down).most_common(1)[0][0] == 1500 + traffic.MAC_OVERHEAD_BYTES


def test_table5_no_app_class_is_management_and_control_only():
    # Paper 1, Table 5: 95,306 data frames all carry an app; No-App = 14,805 mgmt + 30,554 ctrl.
    assert sum(traffic.TABLE5_APPS_OF_DATA.values()) == 95306
    assert "none" not in traffic.TABLE5_APPS_OF_DATA
    assert sum(traffic.TABLE5_NO_APP_BY_FRAME.values()) == 45359
    assert all(s.app != "none" for s in _specs(3000) if s.frame == "data")


def test_app_profiles_carry_the_cited_figures():
    p = traffic.APP_PROFILES
    assert set(p) == set(schema.APP.classes) - {"none"}
    assert p["spotify"].bitrates_kbps == (96.0, 160.0, 320.0)  # Ogg Vorbis quality levels
    assert min(p["tunein"].bitrates_kbps) == 64.0 and max(p["tunein"].bitrates_kbps) == 320.0
    assert p["youtube"].transport == "quic" and traffic.QUIC_FULL_IP_BYTES == 1350 + 8 + 20
    assert {a for a, prof in p.items() if prof.transport == "tcp"} == set(p) - {"youtube"}
    assert traffic.TCP_FULL_IP_BYTES == 1460 + 40 and traffic.TCP_ACK_IP_BYTES == 52
    assert p["twitch"].delivery == "live" and p["twitch"].segment_seconds == 2.0
    assert max(p["twitch"].bitrates_kbps) == 6000.0 and min(p["twitch"].bitrates_kbps) < 1000
    assert p["netflix"].segment_seconds == 4.0 and p["netflix"].buffer_seconds == 240.0
    # Nothing an app could be told apart by that real traffic lacks: all best effort.
    assert {prof.tid for prof in p.values()} == {0}
    assert (traffic.AMPDU_MAX_SUBFRAMES, traffic.AMPDU_MAX_BYTES) == (64, 65535)
    assert traffic.PPDU_MAX_US == 5484.0

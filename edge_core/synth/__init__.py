"""Synthetic 802.11 L1 traffic: standard-shaped PHY waveforms, traffic models, impairments."""

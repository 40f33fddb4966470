"""Independent 802.11 receivers for testing the synthetic transmitter (issue 12).

They share no code with `edge_core.synth`: every constant is retyped from IEEE Std 802.11-2016
(clause 15/16 DSSS and HR/DSSS, clause 17 OFDM, clause 19 HT-mixed).
"""

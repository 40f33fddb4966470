"""IQ sample formats and SigMF recordings."""

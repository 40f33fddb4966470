"""IQ sources (one module per source); the contract is in `base`."""

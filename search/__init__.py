"""Ray Tune search over cVAE configurations (spaces/*.yaml)."""

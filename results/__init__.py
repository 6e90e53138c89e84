"""Final stage: retraining, FID/IS scoring and the Parquet leaderboard."""

"""What a search produced and how it is measured: features and metrics of samples, the samplers,
the run folder, the leaderboard, and the commands that show and regenerate its rows."""

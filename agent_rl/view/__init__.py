"""`agent-rl view`: a run's trajectories in a local web page (or one static HTML file)."""

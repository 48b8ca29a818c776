"""Expert demonstrations: gold patches played as edit actions by a scripted engine through the normal episode runner (`agent-rl demos`)."""

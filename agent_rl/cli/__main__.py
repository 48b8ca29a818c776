"""`python -m agent_rl.cli ...`: the same entry point as the `agent-rl` console script."""
import sys

from agent_rl.cli import main

sys.exit(main())

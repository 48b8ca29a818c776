"""What an episode is: SWE tasks, the Gymnasium environment and tamper-proof grading.

Builds on `sandboxes`; knows nothing of torch. `import envs` registers `agent_rl/SWE-v0`
lazily through gymnasium's entry-point string, so importing does no work.
"""
from envs.tasks import Task, TaskError

__all__ = ["Task", "TaskError"]

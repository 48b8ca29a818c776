"""What an episode is: SWE tasks, the Gymnasium environment and tamper-proof grading.

Builds on `sandboxes`; knows nothing of torch. `import envs` registers `agent_rl/SWE-v0`
lazily through gymnasium's entry-point string, so importing does no work.
"""
from envs.registration import ENV_ID, register_envs
from envs.tasks import Task, TaskError, TaskStore, load_tasks

register_envs()

__all__ = ["ENV_ID", "Task", "TaskError", "TaskStore", "load_tasks"]

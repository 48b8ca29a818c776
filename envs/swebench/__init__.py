"""SWE-bench parity: read test logs, pick runners and write reports as the official harness does.

`log_parsers` (log text → {test: status}), `specs` (repository → parser and test command),
`eval_log` (a whole eval log → statuses, or "this run does not count"), `report` (statuses +
FAIL_TO_PASS/PASS_TO_PASS → the official report fields and files), `datasets` (SWE-bench,
SWE-Gym, SWE-smith, SWE-rebench, R2E-Gym rows → tasks: image, /testbed, activation, runner),
`log_grading` (the pure half of grading non-pytest tasks from the runner's log; `envs.grading`
runs it in the container), `r2e` (native R2E-Gym rows: loading, the agent's and the grader's
image layers, R2E-Gym's log parser and reward; `envs.grading` runs it in the container). Pure
Python: no Docker, no dependency on the `swebench` package (the tests compare against it).
"""

"""The three ServerTransports (attach socket, exec_run, local pipes) give the same answers."""
from __future__ import annotations

import pytest

from sandboxes.base import SandboxDied
from sandboxes.fastexec import FileTooLarge
from sandboxes.local import LocalSandbox
from sandboxes.transports import AttachSocketTransport, ExecRunTransport, PipeTransport, ServerTransport

docker_test = pytest.mark.docker

# Each step: command and exec() keyword arguments. Together they cover exit codes, output,
# capping, cwd/env persistence, per-call overrides that do not persist, timeouts, and a
# command killing the shell it runs in.
SCRIPT = [
    ("echo out; echo err >&2; exit 3", {}),
    ("cd /tmp && export FOO=bar", {}),
    ("pwd; echo $FOO", {}),
    ("pwd; echo $X $FOO", {"cwd": "/", "env": {"X": "1", "FOO": "override"}}),
    ("pwd; echo ${X:-unset} $FOO", {}),
    ("unset FOO; cd /", {}),
    ("pwd; echo ${FOO:-gone}", {}),
    ("seq 1 5000", {}),
    ("printf 'caf\\xc3\\xa9 \\xff\\n'", {}),
    ("echo started; sleep 30", {"timeout": 1}),
    # $$ is the command's shell, or the zygote that forked it (fast path, local): either way
    # it dies, the command reports SIGKILL and the next command runs.
    ("kill -9 $$", {}),
    ("echo after-kills; pwd", {}),
    ("exit 0", {"cwd": "/no/such/dir"}),
]


def _run_script(sandbox) -> list[tuple]:
    results = []
    for cmd, kwargs in SCRIPT:
        result = sandbox.exec(cmd, **kwargs)
        results.append((cmd, result.exit_code, result.output, result.timed_out, result.truncated))
    sandbox.write_file("/tmp/t/f.bin", b"\x00\xffdata")
    results.append(("read", sandbox.read_bytes("/tmp/t/f.bin")))
    for error, call in ((FileNotFoundError, lambda: sandbox.read_file("/tmp/t/missing")),
                        (FileTooLarge, lambda: sandbox.read_bytes("/tmp/t/f.bin", max_bytes=2))):
        with pytest.raises(error):
            call()
    return results


def test_every_transport_meets_the_protocol():
    for cls in (AttachSocketTransport, ExecRunTransport, PipeTransport):
        missing = [name for name in ("request", "read_bytes", "write_bytes", "stderr_tail", "close")
                   if not callable(getattr(cls, name, None))]
        assert missing == [], f"{cls.__name__} lacks {missing}"


@docker_test
def test_attach_socket_exec_run_and_pipes_answer_alike(make_sandbox):
    fast = make_sandbox({"output_cap": 1000})
    fallback = make_sandbox({"output_cap": 1000, "fast_exec": False})
    assert isinstance(fast._transport, AttachSocketTransport) and isinstance(fast._transport, ServerTransport)
    assert isinstance(fallback._transport, ExecRunTransport) and isinstance(fallback._transport, ServerTransport)
    expected = _run_script(fast)
    assert expected[0][1:3] == (3, "out\nerr\n")
    assert expected[2][2] == "/tmp\nbar\n" and expected[4][2] == "/tmp\nunset bar\n"
    assert expected[9][1:5] == (124, "started\n", True, False) and expected[7][4] is True
    assert expected[10][1] == 137 and expected[11][1:3] == (0, "after-kills\n/\n")
    assert _run_script(fallback) == expected
    with LocalSandbox({"output_cap": 1000}) as local:
        assert isinstance(local._transport, PipeTransport)
        assert _run_script(local) == expected


@docker_test
@pytest.mark.parametrize("fast_exec", [True, False], ids=["attach-socket", "exec-run"])
def test_a_dead_container_raises_sandbox_died_on_every_operation(make_sandbox, docker_client, fast_exec):
    sandbox = make_sandbox({"fast_exec": fast_exec})
    sandbox.write_file("x.txt", "x")
    docker_client.api.kill(sandbox.container_id)
    for operation in (lambda: sandbox.exec("true", timeout=5), lambda: sandbox.read_file("x.txt"),
                      lambda: sandbox.write_file("y.txt", "y"), lambda: sandbox.ping()):
        with pytest.raises(SandboxDied, match="died"):
            operation()
    sandbox.close()


def test_short_commands_are_forked_by_one_waiting_shell():
    """The server's zygote: one bash forks each short command's shell (`$$` names it, as in
    any subshell), and a command that changes the environment gets it replaced."""
    with LocalSandbox() as sandbox:
        first, second = (sandbox.exec("echo $$ $BASHPID").output.split() for _ in range(2))
        assert first[0] == second[0] and len({first[1], second[1], first[0]}) == 3
        assert sandbox.exec("export CHANGED=1").ok
        zygote, changed = sandbox.exec("echo $$ $CHANGED").output.split()
        assert changed == "1" and zygote != first[0]
        # Per-call overrides and long commands take a shell of their own; the zygote stays.
        assert sandbox.exec("echo $$ $BASHPID", env={"X": "1"}).output.split()[0] not in (zygote, first[0])
        long_command = "echo $$ #" + "x" * 5000
        assert sandbox.exec(long_command).output.split()[0] != zygote
        assert sandbox.exec("echo $$").output.split() == [zygote]

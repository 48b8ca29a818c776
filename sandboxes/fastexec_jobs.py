"""How the command server (`fastexec_server.py`) starts, waits for and kills commands.

Stdlib only, Python 3.8+: it is copied into every sandbox next to the server. Each command
runs in a bash of its own, in its own process group, with the `_WRAPPER` script that saves
the directory and exported environment it leaves behind. That bash is either forked by a
waiting zygote bash (short commands with no per-call overrides) or spawned afresh.
"""
import functools
import os
import select
import signal
import subprocess
import tempfile
import time

# Runs the user's command with `eval` and, on any exit (normal end or `exit N`), saves the
# directory and exported environment it leaves behind. The dump uses builtins only
# (compgen to a file, read, printf): forking `env -0` or `$(...)` would add milliseconds to
# every command. Our arguments are moved to unexported variables and `set --` clears them.
_WRAPPER = r"""
__agent_rl_cmd=$1 __agent_rl_cwd_file=$2 __agent_rl_names_file=$3 __agent_rl_env_file=$4
set --
__agent_rl_save() {
    __agent_rl_rc=$?
    pwd > "$__agent_rl_cwd_file" 2>/dev/null
    compgen -e > "$__agent_rl_names_file" 2>/dev/null
    while IFS= read -r __agent_rl_v; do
        printf '%s=%s\0' "$__agent_rl_v" "${!__agent_rl_v}"
    done < "$__agent_rl_names_file" > "$__agent_rl_env_file" 2>/dev/null
    exit $__agent_rl_rc
}
trap __agent_rl_save EXIT
eval "$__agent_rl_cmd"
"""
# Starting bash is most of what a trivial command costs: inside a container on
# fuse-overlayfs, exec plus dynamic linking through FUSE takes ~6 ms, and a shell started
# ahead of time after each reply is not ready yet when commands come back to back. So one
# long-running "zygote" bash forks each short command's shell instead: forking a running
# bash takes well under a millisecond. The zygote starts off the critical path with the
# session's environment and is replaced when a command changes that environment. Job
# control (`set -m`) puts each command in its own process group, as `start_new_session`
# does for spawned shells; the command turns it off so its own background jobs stay in that
# group. After each command, off the critical path, the zygote reads the next output path,
# forks a shell that opens it and then waits on the shared stdin for its directory and
# command (NUL-terminated: `read -d ''` costs a syscall per byte, so only short commands
# take this path; long ones, like file contents in a heredoc, spawn a shell), prints that
# shell's pid, waits for it and prints its exit status. The command's `cd` to its directory
# is a real chdir (the zygote's own may have been deleted) that keeps OLDPWD as it was.
_ZYGOTE = r"""
exec 2>/dev/null
set -m
while IFS= read -r -d '' __agent_rl_out; do
    (
        set +m
        exec >"$__agent_rl_out" 2>&1
        IFS= read -r -d '' __agent_rl_dir && IFS= read -r -d '' __agent_rl_in || exit 0
        exec </dev/null
        __agent_rl_old=${OLDPWD-}; cd -- "$__agent_rl_dir"; OLDPWD=$__agent_rl_old
        set -- "$__agent_rl_in" "$@"
        unset __agent_rl_in __agent_rl_out __agent_rl_dir __agent_rl_old
""" + _WRAPPER + r"""
    ) &
    echo "$!"
    wait "$!"
    echo "$?"
done
"""
ZYGOTE_MAX_COMMAND_BYTES = 4096


def spawn_shell(cmd, state_args, env, start_dir, out):
    """A new bash for `cmd` in its own session, output to the file `out`."""
    proc = subprocess.Popen(
        ["bash", "-c", _WRAPPER, "agent-rl", cmd] + state_args,
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        cwd=start_dir, env=env, start_new_session=True,
    )
    return SpawnedJob(proc)


class SpawnedJob:
    """A command in a shell of its own (a child of the server)."""

    def __init__(self, proc):
        self.proc, self.pid = proc, proc.pid

    def finish(self, timeout):
        """Wait for the command: (exit code, timed out?)."""
        timed_out = not wait_for(self.proc, timeout)
        code = self.proc.wait()
        return (128 - code if code < 0 else code), timed_out  # killed by a signal: shell convention


class ZygoteJob:
    """A command in a shell the zygote forked: not our child, so watched through a pidfd."""

    def __init__(self, zygote, pid):
        self.zygote, self.pid = zygote, pid

    def finish(self, timeout):
        timed_out = not wait_pid(self.pid, timeout)
        if timed_out:
            signal_group(self.pid)
        status = self.zygote.status()
        # No status: the zygote itself was killed along with the command (`kill -9 -1`, say).
        return (128 + signal.SIGKILL if status is None else status), timed_out


class Zygote:
    """A bash kept running between commands that forks each command's shell (see _ZYGOTE)."""

    def __init__(self, env, start_dir, state_args):
        self.env = dict(env)
        self.proc = subprocess.Popen(
            ["bash", "-c", _ZYGOTE, "agent-rl"] + state_args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=start_dir, env=self.env, start_new_session=True,
        )
        self._waiting = None  # (pid, fd, path): a forked shell waiting for its command, its output

    def alive(self):
        return self.proc.poll() is None

    def fork_next(self, output_dir):
        """Have a shell forked and waiting for the next command, with its output file open.
        Creating that file costs ~0.5 ms on fuse-overlayfs: one more reason to do it now."""
        if self._waiting is not None:
            return
        fd, path = tempfile.mkstemp(prefix=".agent-rl-out-", dir=output_dir)
        try:
            self._send(path.encode("utf-8", "surrogateescape"))
            self._waiting = (int(self.proc.stdout.readline()), fd, path)
        except (OSError, ValueError):
            os.close(fd)
            os.unlink(path)
            raise OSError("the zygote shell is gone")

    def run(self, start_dir, command):
        """Hand the command to the waiting shell: (pid, output file, its path), or None when
        there is no waiting shell (the zygote was killed, say by `pkill bash`)."""
        if self._waiting is None or not self.alive():
            return None
        pid, fd, path = self._waiting
        self._waiting = None
        try:
            self._send(start_dir.encode("utf-8", "surrogateescape"), command)
        except OSError:
            os.close(fd)
            os.unlink(path)
            return None
        return pid, os.fdopen(fd, "w+b"), path

    def _send(self, *fields):
        self.proc.stdin.write(b"".join(field + b"\0" for field in fields))
        self.proc.stdin.flush()

    def status(self):
        """The exit status of the command last run, once it ended; None if the zygote died."""
        try:
            return int(self.proc.stdout.readline())
        except (OSError, ValueError):
            return None

    def stop(self):
        signal_group(self.proc.pid)
        if self._waiting is not None:
            pid, fd, path = self._waiting
            signal_group(pid)
            os.close(fd)
            os.unlink(path)
            self._waiting = None
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):  # not communicate(): it would read
            try:                                          # until every holder of the pipe exits
                pipe.close()
            except OSError:
                pass


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def wait_for(proc, timeout):
    """Wait for the command's shell to exit; on timeout kill its group. True if it exited.

    Popen.wait(timeout) polls with sleeps of up to 50 ms, and a timer thread costs a thread
    start (two context switches) per command; a pidfd lets one poll() wait with a deadline.
    """
    if timeout is None:
        proc.wait()
        return True
    if have_pidfd():
        exited = wait_pid(proc.pid, timeout)
    else:  # Python < 3.9 or kernel < 5.3
        try:
            proc.wait(timeout=timeout)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
    if not exited:
        signal_group(proc.pid)
    return exited


def wait_pid(pid, timeout):
    """Wait through a pidfd (it works for processes that are not our children) for `pid` to
    exit; True if it did within `timeout` seconds (None: no limit)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already exited and reaped
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))
    finally:
        os.close(pidfd)


@functools.lru_cache(maxsize=None)
def have_pidfd():
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):
        return False


def kill_group(pgid):
    # A few rounds: a fork bomb can add members while a kill is delivered. Not "until the
    # group is empty": orphans stay listed as zombies until init reaps them, which a bare
    # host init may take its time over.
    for _ in range(3):
        if not signal_group(pgid):
            return
        time.sleep(0.005)

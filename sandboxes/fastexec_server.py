"""The command server that runs inside every sandbox (stdlib only; Python 3.8+).

Why it exists: one `docker exec` per command costs tens of milliseconds of engine round
trips. Instead this server is the container's main process (under `--init`) and reads
JSON-lines requests on stdin, answering on stdout, so a command costs one fork plus one
round trip over the already-open attach socket. `LocalSandbox` runs the same file as a
subprocess, and the `exec_run` fallback runs it once per command (`--request`), so all
three paths share one set of semantics:

* Each command runs in a bash of its own (forked by a waiting "zygote" bash, see _ZYGOTE)
  in its own process group, with stdin from /dev/null (so it cannot eat our request
  stream) and stdout+stderr sent to a temp file that is unlinked once read (so a
  background daemon that keeps the file open cannot block the reply).
* A timeout SIGKILLs the whole process group and returns the output so far.
* Like a shell session, the working directory and exported environment a command leaves
  behind (via `cd`, `export`) carry over to the next command. A bash EXIT trap dumps
  them to side files; a command that is killed leaves the state unchanged.
  Shell functions, aliases and unexported variables do not carry over.
* Per-call `cwd`/`env` overrides apply to that command only.
* Output is returned as raw bytes (base64): all of it when small, else a head and a tail;
  the client decodes and caps it.

Protocol: request  {"id": n, "op": "exec"|"read"|"write"|"ping", ...}
          response {"id": n, "ok": true, ...} or {"id": n, "ok": false, "error": str, "kind": str}
"""
import base64
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

# Variables bash manages itself; persisting them would make them drift (SHLVL grows by one
# per command) or lie about the directory.
_SHELL_OWNED = ("_", "SHLVL", "PWD")
DEFAULT_MAX_BYTES = 256 * 1024
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
# group. Per command the zygote reads the output path, the directory and the command, each
# NUL-terminated (`read -d ''` costs a syscall per byte, so only short commands take this
# path; long ones, like file contents in a heredoc, spawn a shell), prints the command's
# pid, waits for it and prints its exit status. The command's `cd` to its directory is a
# real chdir (the zygote's own may have been deleted) that keeps OLDPWD as it was.
_ZYGOTE = r"""
exec 2>/dev/null
set -m
while IFS= read -r -d '' __agent_rl_out && IFS= read -r -d '' __agent_rl_dir \
        && IFS= read -r -d '' __agent_rl_in; do
    (
        set +m
        exec </dev/null >"$__agent_rl_out" 2>&1
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
TIMEOUT_EXIT_CODE = 124


class FileTooLargeError(Exception):
    pass


class ShellSession:
    """Working directory and exported environment that persist between commands."""

    def __init__(self, workdir, state_dir=None, prestart=False):
        self.workdir = workdir
        self.state_dir = state_dir or tempfile.mkdtemp(prefix=".agent-rl-shell-", dir=_fast_tmp_dir())
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        # Command output can be large (tens of MB), so it goes to the ordinary temp dir, not
        # to a size-capped tmpfs like /dev/shm.
        self.output_dir = tempfile.gettempdir()
        self.prestart = prestart
        self._zygote = None  # the bash that forks short commands' shells (see _ZYGOTE)
        self.cwd = workdir
        self.env = {k: v for k, v in os.environ.items() if k not in _SHELL_OWNED}
        self._persisted = os.path.join(self.state_dir, "session.json")
        self._groups = set()  # process groups of commands started, for `kill_all`

    # State survives across processes only in `--request` mode (one process per command).
    def load(self):
        try:
            with open(self._persisted) as handle:
                saved = json.load(handle)
            self.cwd, self.env = saved["cwd"], saved["env"]
        except (OSError, ValueError, KeyError):
            pass

    def save(self):
        tmp = self._persisted + ".tmp"
        with open(tmp, "w") as handle:
            json.dump({"cwd": self.cwd, "env": self.env}, handle)
        os.replace(tmp, self._persisted)

    def _start_dir(self, override):
        if override:
            return override
        for candidate in (self.cwd, self.workdir, "/"):
            if os.path.isdir(candidate):
                return candidate
        return "/"

    def run(self, cmd, timeout=None, cwd=None, env=None, max_bytes=DEFAULT_MAX_BYTES):
        start_dir = self._start_dir(cwd)
        if cwd and not os.path.isdir(cwd):
            message = "agent-rl: working directory does not exist: %s\n" % cwd
            return _exec_reply(1, False, message.encode(), 0.0, max_bytes)
        cwd_file, env_file = self._state_files()
        for stale in (cwd_file, env_file):
            if os.path.exists(stale):
                os.unlink(stale)
        started = time.monotonic()
        try:
            job, out = self._start(cmd, cwd, env, start_dir)
        except OSError as exc:  # e.g. EAGAIN when a fork bomb holds every pid
            message = "agent-rl: could not start the command: %s\n" % exc
            return _exec_reply(126, False, message.encode(), time.monotonic() - started, max_bytes)
        with out:
            # Forget finished groups, so `kill_all` never signals a group id reused since.
            self._groups = {pgid for pgid in self._groups if _group_alive(pgid)}
            self._groups.add(job.pid)
            code, timed_out = job.finish(timeout)
            if timed_out:
                _kill_group(job.pid)  # members that outlived the leader
                code = TIMEOUT_EXIT_CODE
            duration = time.monotonic() - started
            if not timed_out:
                self._absorb_state(cwd_file, env_file, cwd, env or {})
            return _exec_reply(code, timed_out, out, duration, max_bytes)

    def _start(self, cmd, cwd, env, start_dir):
        """The command's job and its output file: forked by the zygote when it fits."""
        data = cmd.encode("utf-8", "surrogateescape")
        zygote = self._zygote
        if zygote is not None and not cwd and not env and len(data) < ZYGOTE_MAX_COMMAND_BYTES:
            if zygote.env == self.env:
                # A named file: the zygote's command opens it. Unlinked once the command ends,
                # so a background daemon that keeps it open cannot block anything.
                fd, path = tempfile.mkstemp(prefix=".agent-rl-out-", dir=self.output_dir)
                pid = zygote.launch(path, start_dir, data)
                if pid is not None:
                    return _ZygoteJob(zygote, pid, path), os.fdopen(fd, "w+b")
                os.close(fd)
                os.unlink(path)
            self._stop_zygote()  # stale environment, or killed (say, by `pkill bash`)
        run_env = dict(self.env)
        run_env.update(env or {})
        cwd_file, env_file = self._state_files()
        out = tempfile.TemporaryFile(dir=self.output_dir)
        try:
            proc = subprocess.Popen(
                ["bash", "-c", _WRAPPER, "agent-rl", cmd, cwd_file, env_file + ".names", env_file],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=start_dir, env=run_env, start_new_session=True,
            )
        except OSError:
            out.close()
            raise
        return _SpawnedJob(proc), out

    def _state_files(self):
        return os.path.join(self.state_dir, "cwd"), os.path.join(self.state_dir, "env")

    def prepare_next(self):
        """Have a zygote for the current environment ready, while nobody waits for a reply."""
        if not self.prestart or not _have_pidfd():
            return
        if self._zygote is not None and (self._zygote.env != self.env or not self._zygote.alive()):
            self._stop_zygote()
        if self._zygote is None:
            cwd_file, env_file = self._state_files()
            try:
                self._zygote = _Zygote(self.env, self._start_dir(None), [cwd_file, env_file + ".names", env_file])
            except OSError:
                self._zygote = None  # no pids left, say: the next command starts its own shell

    def _stop_zygote(self):
        if self._zygote is not None:
            self._zygote.stop()
            self._zygote = None

    def kill_all(self):
        """Kill what commands left running (background jobs). Outside a container nothing
        else would: the container's teardown is what normally does this."""
        self._stop_zygote()
        for pgid in self._groups:
            _signal_group(pgid)
        self._groups.clear()

    def _absorb_state(self, cwd_file, env_file, cwd_override, env_override):
        try:
            with open(cwd_file) as handle:
                new_cwd = handle.read().rstrip("\n")
            if new_cwd and not (cwd_override and new_cwd == cwd_override):
                self.cwd = new_cwd
        except OSError:
            pass
        try:
            with open(env_file, "rb") as handle:
                raw = handle.read()
        except OSError:
            return
        new_env = {}
        for entry in raw.split(b"\0"):
            key, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
            if sep and key not in _SHELL_OWNED:
                new_env[key] = value
        for key, value in env_override.items():
            if new_env.get(key) == value:  # untouched override: restore what was there before
                if key in self.env:
                    new_env[key] = self.env[key]
                else:
                    new_env.pop(key, None)
        self.env = new_env


class _SpawnedJob:
    """A command in a shell of its own (a child of the server)."""

    def __init__(self, proc):
        self.proc, self.pid = proc, proc.pid

    def finish(self, timeout):
        """Wait for the command: (exit code, timed out?)."""
        timed_out = not _wait_for(self.proc, timeout)
        code = self.proc.wait()
        return (128 - code if code < 0 else code), timed_out  # killed by a signal: shell convention


class _ZygoteJob:
    """A command in a shell the zygote forked: not our child, so watched through a pidfd."""

    def __init__(self, zygote, pid, output_path):
        self.zygote, self.pid, self.output_path = zygote, pid, output_path

    def finish(self, timeout):
        timed_out = not _wait_pid(self.pid, timeout)
        if timed_out:
            _signal_group(self.pid)
        os.unlink(self.output_path)
        status = self.zygote.status()
        # No status: the zygote itself was killed along with the command (`kill -9 -1`, say).
        return (128 + signal.SIGKILL if status is None else status), timed_out


class _Zygote:
    """A bash kept running between commands that forks each command's shell (see _ZYGOTE)."""

    def __init__(self, env, start_dir, state_args):
        self.env = dict(env)
        self.proc = subprocess.Popen(
            ["bash", "-c", _ZYGOTE, "agent-rl"] + state_args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=start_dir, env=self.env, start_new_session=True,
        )

    def alive(self):
        return self.proc.poll() is None

    def launch(self, out_path, start_dir, command):
        """Fork the command's shell; its pid, or None when the zygote is gone."""
        try:
            self.proc.stdin.write(b"\0".join([out_path.encode("utf-8", "surrogateescape"),
                                              start_dir.encode("utf-8", "surrogateescape"), command, b""]))
            self.proc.stdin.flush()
            return int(self.proc.stdout.readline())
        except (OSError, ValueError):
            return None

    def status(self):
        """The exit status of the command last launched, once it ended; None if the zygote died."""
        try:
            return int(self.proc.stdout.readline())
        except (OSError, ValueError):
            return None

    def stop(self):
        _signal_group(self.proc.pid)
        self.proc.communicate()  # reaps it and closes our ends of its pipes


def _fast_tmp_dir():
    """A tmpfs for the small per-command state files: on fuse-overlayfs every file operation
    costs ~0.6 ms, on /dev/shm ~0.05 ms. None (the default temp dir) when it is not usable."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK) else None


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _signal_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _wait_for(proc, timeout):
    """Wait for the command's shell to exit; on timeout kill its group. True if it exited.

    Popen.wait(timeout) polls with sleeps of up to 50 ms, and a timer thread costs a thread
    start (two context switches) per command; a pidfd lets one poll() wait with a deadline.
    """
    if timeout is None:
        proc.wait()
        return True
    if _have_pidfd():
        exited = _wait_pid(proc.pid, timeout)
    else:  # Python < 3.9 or kernel < 5.3
        try:
            proc.wait(timeout=timeout)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
    if not exited:
        _signal_group(proc.pid)
    return exited


def _wait_pid(pid, timeout):
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
def _have_pidfd():
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):
        return False


def _kill_group(pgid):
    # A few rounds: a fork bomb can add members while a kill is delivered. Not "until the
    # group is empty": orphans stay listed as zombies until init reaps them, which a bare
    # host init may take its time over.
    for _ in range(3):
        if not _signal_group(pgid):
            return
        time.sleep(0.005)


def _exec_reply(code, timed_out, out, duration, max_bytes):
    if isinstance(out, bytes):
        data, size = out, len(out)
        head, tail = (data, b"") if size <= max_bytes else (data[: max_bytes // 2], data[-(max_bytes // 2):])
    else:
        size = out.seek(0, os.SEEK_END)
        out.seek(0)
        if size <= max_bytes:
            head, tail = out.read(), b""
        else:
            head = out.read(max_bytes // 2)
            out.seek(size - max_bytes // 2)
            tail = out.read()
    return {
        "exit_code": code,
        "timed_out": timed_out,
        "size": size,
        "head": base64.b64encode(head).decode(),
        "tail": base64.b64encode(tail).decode(),
        "duration": duration,
    }


def _resolve(session, path):
    return path if os.path.isabs(path) else os.path.join(session.workdir, path)


def handle(session, request):
    op = request.get("op")
    if op == "ping":
        return {"pid": os.getpid(), "uid": os.getuid()}
    if op == "exec":
        return session.run(
            request["cmd"], request.get("timeout"), request.get("cwd"), request.get("env"),
            int(request.get("max_bytes") or DEFAULT_MAX_BYTES),
        )
    if op == "read":
        with open(_resolve(session, request["path"]), "rb") as handle_:
            # An agent can leave a huge file where the grader reads; refuse rather than
            # build a reply that large.
            size = os.fstat(handle_.fileno()).st_size
            limit = request.get("max_bytes")
            if limit is not None and size > int(limit):
                raise FileTooLargeError("%s is %d bytes, over the %d-byte read limit" % (request["path"], size, limit))
            return {"data": base64.b64encode(handle_.read()).decode()}
    if op == "write":
        path = _resolve(session, request["path"])
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "wb") as handle_:
            handle_.write(base64.b64decode(request["data"]))
        if request.get("mode") is not None:
            os.chmod(path, int(request["mode"]))
        return {}
    raise ValueError("unknown op %r" % (op,))


def answer(session, request):
    reply_id = request.get("id") if isinstance(request, dict) else None
    try:
        if not isinstance(request, dict):
            raise ValueError("request must be a JSON object")
        body = handle(session, request)
        body.update({"id": reply_id, "ok": True})
        return body
    except Exception as exc:  # every failure becomes a reply; the server must keep serving
        return {"id": reply_id, "ok": False, "kind": type(exc).__name__, "error": str(exc)}


def serve(session, instream, outstream):
    for line in instream:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as exc:
            request = None
            reply = {"id": None, "ok": False, "kind": "ValueError", "error": "bad JSON: %s" % exc}
        else:
            reply = answer(session, request)
        outstream.write(json.dumps(reply).encode() + b"\n")
        outstream.flush()
        session.prepare_next()


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description="agent-rl in-sandbox command server")
    parser.add_argument("--workdir", default=os.getcwd())
    parser.add_argument("--state-dir", default=None, help="where session state lives (default: a new temp dir)")
    parser.add_argument("--request", default=None, help="answer one base64 JSON request and exit")
    args = parser.parse_args(argv)
    # Only a long-running server pre-starts shells; `--request` answers one request and exits.
    session = ShellSession(args.workdir, args.state_dir, prestart=args.request is None)
    if args.request is not None:
        session.load()
        reply = answer(session, json.loads(base64.b64decode(args.request)))
        session.save()
        sys.stdout.write(json.dumps(reply) + "\n")
        return 0
    try:
        session.prepare_next()
        serve(session, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        session.kill_all()
        if args.state_dir is None:
            import shutil

            shutil.rmtree(session.state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

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
  background daemon that keeps the file open cannot block the reply). As in any bash
  subshell, `$$` in a forked command is the pid of the shell that forked it (the zygote);
  `$BASHPID` is the command's own.
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
import json
import os
import sys
import tempfile
import time

# The server runs as a script next to its one helper module; say so explicitly, since
# PYTHONSAFEPATH (or -P) would keep the script's directory off the import path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastexec_jobs import (  # noqa: E402
    ZYGOTE_MAX_COMMAND_BYTES,
    Zygote,
    ZygoteJob,
    group_alive,
    have_pidfd,
    kill_group,
    signal_group,
    spawn_shell,
)

# Variables bash manages itself; persisting them would make them drift (SHLVL grows by one
# per command) or lie about the directory.
_SHELL_OWNED = ("_", "SHLVL", "PWD")
DEFAULT_MAX_BYTES = 256 * 1024
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
        self._unlink_later = []  # output files read already
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
            self._groups = {pgid for pgid in self._groups if group_alive(pgid)}
            self._groups.add(job.pid)
            code, timed_out = job.finish(timeout)
            if timed_out:
                kill_group(job.pid)  # members that outlived the leader
                code = TIMEOUT_EXIT_CODE
            duration = time.monotonic() - started
            if not timed_out:
                self._absorb_state(cwd_file, env_file, cwd, env or {})
            return _exec_reply(code, timed_out, out, duration, max_bytes)

    def _start(self, cmd, cwd, env, start_dir):
        """The command's job and its output file: forked by the zygote when it fits."""
        data = cmd.encode("utf-8", "surrogateescape")
        zygote = self._zygote
        # A zygote with another environment is replaced in `prepare_next`, after the reply.
        if (zygote is not None and zygote.env == self.env and not cwd and not env
                and len(data) < ZYGOTE_MAX_COMMAND_BYTES):
            started = zygote.run(start_dir, data)
            if started is not None:
                pid, out, path = started
                # Unlinked after the reply (another ~0.5 ms on fuse-overlayfs); unlinked, a
                # background daemon that keeps the file open cannot block anything.
                self._unlink_later.append(path)
                return ZygoteJob(zygote, pid), out
            self._stop_zygote()  # it was killed (say, by `pkill bash`): spawn a shell instead
        run_env = dict(self.env)
        run_env.update(env or {})
        out = tempfile.TemporaryFile(dir=self.output_dir)
        try:
            return spawn_shell(cmd, self._state_args(), run_env, start_dir, out), out
        except OSError:
            out.close()
            raise

    def _state_files(self):
        return os.path.join(self.state_dir, "cwd"), os.path.join(self.state_dir, "env")

    def _state_args(self):
        """Where a command's shell dumps the state it leaves behind: cwd, names, environment."""
        cwd_file, env_file = self._state_files()
        return [cwd_file, env_file + ".names", env_file]

    def _unlink_outputs(self):
        for path in self._unlink_later:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._unlink_later = []

    def prepare_next(self):
        """Have a zygote for the current environment with a shell forked for the next command,
        and remove used output files, while nobody waits for a reply."""
        self._unlink_outputs()
        if not self.prestart or not have_pidfd():
            return
        if self._zygote is not None and (self._zygote.env != self.env or not self._zygote.alive()):
            self._stop_zygote()
        try:
            if self._zygote is None:
                self._zygote = Zygote(self.env, self._start_dir(None), self._state_args())
            self._zygote.fork_next(self.output_dir)
        except OSError:  # no pids or disk left, say: the next command starts its own shell
            self._stop_zygote()

    def _stop_zygote(self):
        if self._zygote is not None:
            self._zygote.stop()
            self._zygote = None

    def kill_all(self):
        """Kill what commands left running (background jobs). Outside a container nothing
        else would: the container's teardown is what normally does this."""
        self._stop_zygote()
        self._unlink_outputs()
        for pgid in self._groups:
            signal_group(pgid)
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


def _fast_tmp_dir():
    """A tmpfs for the small per-command state files: on fuse-overlayfs every file operation
    costs ~0.6 ms, on /dev/shm ~0.05 ms. None (the default temp dir) when it is not usable."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK) else None


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

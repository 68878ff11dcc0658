"""A private Dovecot IMAP server on loopback, for the demo and the tests.

Real Dovecot rather than a fake server, so that sync and mutation code meets
the real protocol: CONDSTORE/QRESYNC, MOVE, UIDPLUS, UIDVALIDITY changes.

Things this machine taught us (Dovecot 2.3):

* The master must start as root; it drops to `nobody` for logins and mail
  access itself. Starting it as `nobody` fails.
* Unix socket paths are limited to ~107 characters, so the runtime files live
  in a short `/tmp/pdc-*` directory, never under a deep pytest tmp path.
* Mail is read and written as `nobody`, so the mail home must be owned by
  nobody:nogroup and every directory above it must be traversable by others.
* The static passdb takes any user name with the one password, and the userdb
  gives each user `<mail_home>/<user>/Maildir`, so a fresh user name is a fresh,
  empty mailbox (the test suite uses that for isolation).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import imapclient

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
START_TIMEOUT = 15.0
_UIDVALIDITY_MAX = 2**32 - 1

CONFIG = """\
# Written by app/demo/dovecot.py for one private instance; not a system config.
protocols = imap
listen = {host}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
# nobody is uid 65534: allow it (the default range starts at 500 and has no top).
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir:LAYOUT=fs
# A demo/test mailbox is disposable; skipping fsync makes seeding several times faster.
mail_fsync = never
mail_max_userip_connections = 500
imap_max_line_length = 1M
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
}}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={home}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


def dovecot_available() -> bool:
    """Whether a real IMAP server can be started here (tests skip otherwise)."""
    return Path(DOVECOT).is_file() and os.access(DOVECOT, os.X_OK)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def nobody_ids() -> tuple[int, int]:
    """uid and gid of nobody:nogroup, the only user Dovecot touches mail as."""
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def chown_tree(path: Path) -> None:
    """Hand a directory tree to nobody:nogroup, the only user Dovecot reads mail as."""
    uid, gid = nobody_ids()
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def _check_traversable(path: Path) -> None:
    """Fail early with a clear message instead of Dovecot's "Permission denied"
    at the first SELECT: the mail processes run as nobody, which needs search
    permission on every directory above the mail home (e.g. /root is 0700)."""
    uid, _ = nobody_ids()
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"Dovecot reads mail as 'nobody', which cannot enter {parent} "
                f"(mode {stat.filemode(st.st_mode)}); put the mail home elsewhere"
            )


def _descendants(pid: int) -> set[int]:
    """All processes below `pid`, so stop() can make sure none outlives the master."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields follow the last ')'.
        ppid = int(data[data.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@dataclass
class DovecotServer:
    """One private Dovecot instance; `start()` returns only once a LOGIN works."""

    mail_home: Path
    username: str = "piper"
    password: str = "piper-demo"
    host: str = "127.0.0.1"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _base: Path | None = field(default=None, init=False, repr=False)
    _picked_port: bool = field(default=False, init=False, repr=False)

    # -- paths -----------------------------------------------------------------

    @property
    def maildir(self) -> Path:
        return self.user_maildir(self.username)

    def user_maildir(self, username: str) -> Path:
        return Path(self.mail_home) / username / "Maildir"

    @property
    def config_path(self) -> Path | None:
        return self._base / "dovecot.conf" if self._base else None

    @property
    def log_path(self) -> Path | None:
        return self._base / "dovecot.log" if self._base else None

    @property
    def pid(self) -> int | None:
        """The master's pid while running; tests use it to prove stop() leaves nothing."""
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, chars: int = 3000) -> str:
        """Dovecot's own log plus anything it printed before it could open that log
        (config errors go to stderr), for error messages."""
        if self._base is None:
            return ""
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            with contextlib.suppress(OSError):
                text = (self._base / name).read_text(errors="replace").strip()
                if text:
                    parts.append(text)
        return "\n".join(parts)[-chars:]

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> DovecotServer:
        if self._proc is not None:
            return self
        if not dovecot_available():
            raise RuntimeError(
                f"{DOVECOT} not found: install dovecot-imapd (scripts/setup.sh does)"
            )
        if os.geteuid() != 0:
            raise RuntimeError("Dovecot must be started as root (it drops to 'nobody' itself)")
        self.mail_home = Path(self.mail_home).resolve()
        self.maildir.mkdir(parents=True, exist_ok=True)
        _check_traversable(self.mail_home)
        chown_tree(self.mail_home)
        # A port picked here can be taken by someone else before Dovecot binds it;
        # only then is it worth trying another one.
        pick_port = self._picked_port or not self.port
        for attempt in range(3):
            if pick_port:
                self.port = _free_port(self.host)
                self._picked_port = True
            try:
                self._launch()
                return self
            except RuntimeError as exc:
                if not (pick_port and "in use" in str(exc)) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        uid, gid = nobody_ids()
        self._base = Path(tempfile.mkdtemp(prefix="pdc-", dir="/tmp"))
        os.chown(self._base, uid, gid)
        conf = self._base / "dovecot.conf"
        conf.write_text(
            CONFIG.format(
                host=self.host,
                port=self.port,
                base=self._base,
                home=self.mail_home,
                password=self.password,
            )
        )
        cmd = [DOVECOT, "-F", "-c", str(conf)]
        # If this process dies without running atexit (SIGKILL, a killed test run),
        # the kernel tells Dovecot to shut down too. Only from the main thread:
        # the signal fires when the *thread* that started the child ends.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        with open(self._base / "dovecot.stderr", "wb") as err:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException as exc:
            tail = self.log_tail()
            self.stop()
            if not isinstance(exc, Exception):
                raise
            raise RuntimeError(
                f"Dovecot did not start on {self.host}:{self.port}: {exc}; log tail:\n{tail}"
            ) from None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError("it exited during start-up")
            try:
                # A short timeout: if something else holds the port it may accept
                # and never greet, and the master's exit should be noticed promptly.
                self.connect(timeout=2).logout()
                return
            except (OSError, imapclient.exceptions.IMAPClientError):
                time.sleep(0.05)
        raise RuntimeError(f"no successful LOGIN within {START_TIMEOUT:.0f}s")

    def stop(self) -> None:
        """Stop Dovecot and every process it started; safe to call twice."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            group = proc.pid
            family = _descendants(proc.pid) if proc.poll() is None else set()
            if proc.poll() is None:
                # The whole group at once: signalled alone, the master spends ~1.1 s
                # shutting its children down and exits before its log process does.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                    proc.wait(timeout=5)
            # Children Dovecot failed to reap; the pgid check avoids a reused pid.
            for pid in family:
                if _pgid(pid) == group:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        base, self._base = self._base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients and tools -----------------------------------------------------

    def connect(self, username: str | None = None, timeout: float = 30) -> imapclient.IMAPClient:
        """A logged-in client; any user name works and gets a mailbox of its own."""
        client = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        try:
            client.login(username or self.username, self.password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def doveadm(self, *args: str) -> str:
        """Run doveadm against this instance (it finds the auth socket via our config)."""
        if self.config_path is None:
            raise RuntimeError("Dovecot is not running")
        done = subprocess.run(
            [DOVEADM, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def reset_folder_uidvalidity(self, folder: str = "INBOX", username: str | None = None) -> int:
        """Give `folder` a new UIDVALIDITY while keeping its messages; returns the new value.

        What a server does after its index is rebuilt: same messages, flags and
        internal dates, but every UID is new. The messages are moved to a scratch
        folder, the now empty folder gets UIDVALIDITY+1 through `doveadm mailbox
        update`, and the messages are moved back. Their new UIDs start at the old
        UIDNEXT, so no old UID is reused: a client that ignored the UIDVALIDITY
        change would find none of its UIDs valid rather than silently wrong data.

        doveadm only runs on the emptied folder: changing UIDVALIDITY of a
        non-empty Maildir makes Dovecot treat the files as expunged and
        reappeared, and on this machine it lost all but one message.
        Works for INBOX too (which IMAP cannot delete or re-create). Nothing else
        should write to the folder meanwhile.
        """
        user = username or self.username
        client = self.connect(user)
        try:
            status = client.select_folder(folder)
            old = int(status[b"UIDVALIDITY"])
            uids = client.search("ALL")
            scratch = f"PiperUidvalidityReset-{uuid.uuid4().hex[:8]}"
            if uids:
                client.create_folder(scratch)
                client.move(uids, scratch)
            client.unselect_folder()
            new = old + 1 if old < _UIDVALIDITY_MAX else 1
            try:
                self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(new), folder)
            finally:
                # Put the messages back even if doveadm failed: never lose mail.
                if uids:
                    client.select_folder(scratch)
                    client.move(client.search("ALL"), folder)
                    client.unselect_folder()
                    client.delete_folder(scratch)
            return new
        finally:
            with contextlib.suppress(Exception):
                client.logout()

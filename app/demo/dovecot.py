"""A private Dovecot IMAP server on loopback, for the demo and the tests.

Dovecot 2.3 must start as root (it drops to `nobody` itself); its runtime
files live in a short temporary directory because unix socket paths are
limited to ~107 characters. The static passdb accepts any user name with the
password, and each user gets `<mail_home>/<user>/Maildir`, so tests can use a
fresh user as a fresh mailbox.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imapclient

DOVECOT = "/usr/sbin/dovecot"

CONFIG = """\
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
first_valid_uid = 1
mail_location = maildir:~/Maildir:LAYOUT=fs
mail_max_userip_connections = 200
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
    return Path(DOVECOT).is_file() and os.access(DOVECOT, os.X_OK)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _nobody() -> tuple[int, int]:
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def chown_tree(path: Path) -> None:
    uid, gid = _nobody()
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)


@dataclass
class DovecotServer:
    mail_home: Path
    username: str = "piper"
    password: str = "piper-demo"
    host: str = "127.0.0.1"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _base: Path | None = field(default=None, init=False, repr=False)

    @property
    def maildir(self) -> Path:
        return self.user_maildir(self.username)

    def user_maildir(self, username: str) -> Path:
        return Path(self.mail_home) / username / "Maildir"

    @property
    def log_path(self) -> Path | None:
        return self._base / "dovecot.log" if self._base else None

    def start(self) -> DovecotServer:
        if os.geteuid() != 0:
            raise RuntimeError("Dovecot must be started as root (it drops privileges itself)")
        if not dovecot_available():
            raise RuntimeError(
                f"{DOVECOT} not found: install dovecot-imapd (scripts/setup.sh does)"
            )
        self.mail_home = Path(self.mail_home).resolve()
        self.mail_home.mkdir(parents=True, exist_ok=True)
        self._base = Path(tempfile.mkdtemp(prefix="pdc-", dir="/tmp"))
        uid, gid = _nobody()
        os.chown(self._base, uid, gid)
        chown_tree(self.mail_home)
        if not self.port:
            self.port = _free_port(self.host)
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
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                client = self.connect()
                client.logout()
                return
            except Exception as exc:  # not up yet
                error = exc
                time.sleep(0.1)
        log = self.log_path.read_text()[-2000:] if self.log_path and self.log_path.exists() else ""
        self.stop()
        raise RuntimeError(f"Dovecot did not start on {self.host}:{self.port}: {error}\n{log}")

    def connect(self, username: str | None = None) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(username or self.username, self.password)
        return client

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait(timeout=5)
        base, self._base = self._base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset_folder_uidvalidity(self, folder: str = "INBOX", username: str | None = None) -> None:
        """Give a folder a new UIDVALIDITY while keeping its messages.

        Over IMAP: copy everything to a scratch folder, delete and re-create the
        folder (new UIDVALIDITY), copy back, drop the scratch folder. For INBOX,
        which cannot be deleted, the messages are expunged and re-appended after
        Dovecot's uidlist file is removed, which forces a new UIDVALIDITY.
        """
        user = username or self.username
        client = self.connect(user)
        try:
            scratch = f"uidv-reset-{int(time.time() * 1000)}"
            client.create_folder(scratch)
            client.select_folder(folder)
            uids = client.search("ALL")
            if uids:
                client.copy(uids, scratch)
            if folder.upper() == "INBOX":
                if uids:
                    client.delete_messages(uids)
                    client.expunge()
                client.unselect_folder()
                client.logout()
                for name in (
                    "dovecot-uidlist",
                    "dovecot.index",
                    "dovecot.index.cache",
                    "dovecot.index.log",
                ):
                    with contextlib.suppress(FileNotFoundError):
                        (self.user_maildir(user) / name).unlink()
                client = self.connect(user)
            else:
                client.unselect_folder()
                client.delete_folder(folder)
                client.create_folder(folder)
            client.select_folder(scratch)
            moved = client.search("ALL")
            if moved:
                client.copy(moved, folder)
            client.unselect_folder()
            client.delete_folder(scratch)
        finally:
            with contextlib.suppress(Exception):
                client.logout()

"""The Gmail test double: a private hoodiecrow-imap (npm) per test with X-GM-EXT-1 and XOAUTH2.

hoodiecrow keeps one mailbox in memory for all logins, so every test starts its own server
(about 0.2 s) from a seed built by `gmail_storage`: each message sits in INBOX (when it has
the ``\\Inbox`` label), in ``[Gmail]/All Mail`` (always, unless spam or trash) and in one folder
per user label, every copy with the same X-GM-MSGID, X-GM-THRID and one shared label list
(tests/support/hoodiecrow/plugins/gmail_labels.js).

Labels and flags are shared by every copy of a message, and a change moves every copy's MODSEQ.
Known differences from real Gmail, by design of the double: unless ``side_effects=True``, label
changes have no side effects on folders (removing ``\\Inbox`` leaves the INBOX copy in place);
UIDs are per folder copy as on Gmail, ``CHANGEDSINCE`` returns everything, there is no
``SEARCH MODSEQ`` and no X-GM-RAW.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVER_JS = Path(__file__).with_name("hoodiecrow") / "server.js"

ALL_MAIL = "[Gmail]/All Mail"
SPECIAL = {
    "All Mail": "\\All",
    "Drafts": "\\Drafts",
    "Important": "\\Important",
    "Sent Mail": "\\Sent",
    "Spam": "\\Junk",
    "Starred": "\\Flagged",
    "Trash": "\\Trash",
}


@dataclass
class GmailMessage:
    raw: str
    labels: list[str] = field(default_factory=lambda: ["\\Inbox"])
    flags: list[str] = field(default_factory=list)
    msgid: int | None = None
    thrid: int | None = None
    internaldate: str | None = None  # e.g. "14-Sep-2013 21:22:28 -0300"


def node_available() -> bool:
    return shutil.which("node") is not None and (ROOT / "node_modules" / "hoodiecrow-imap").is_dir()


def gmail_storage(messages: list[GmailMessage], extra_labels: list[str] = ()) -> dict[str, Any]:
    """A hoodiecrow storage tree laid out as Gmail shows its labels over IMAP."""
    first_id = 1_600_000_000_000_000_000
    folders: dict[str, list[dict[str, Any]]] = {"INBOX": [], ALL_MAIL: []}
    for label in extra_labels:
        folders.setdefault(label, [])
    for n, m in enumerate(messages):
        msgid = str(m.msgid or first_id + n + 1)
        entry: dict[str, Any] = {
            "raw": m.raw,
            "flags": list(m.flags),
            "X-GM-MSGID": msgid,
            "X-GM-THRID": str(m.thrid or msgid),
            "X-GM-LABELS": list(m.labels),
        }
        if m.internaldate:
            entry["internaldate"] = m.internaldate
        places: list[str] = []
        if "\\Spam" in m.labels:
            places.append("[Gmail]/Spam")
        elif "\\Trash" in m.labels:
            places.append("[Gmail]/Trash")
        else:
            places.append(ALL_MAIL)
            for label in m.labels:
                if label == "\\Inbox":
                    places.append("INBOX")
                elif label == "\\Sent":
                    places.append("[Gmail]/Sent Mail")
                elif label == "\\Starred":
                    places.append("[Gmail]/Starred")
                elif label == "\\Important":
                    places.append("[Gmail]/Important")
                elif not label.startswith("\\"):
                    places.append(label)
        for place in places:
            folders.setdefault(place, []).append(dict(entry))

    gmail_children: dict[str, Any] = {
        name: {"special-use": use, "messages": folders.pop(f"[Gmail]/{name}", [])}
        for name, use in SPECIAL.items()
    }
    inbox = folders.pop("INBOX")
    top: dict[str, Any] = {"[Gmail]": {"flags": ["\\Noselect"], "folders": gmail_children}}
    for label, msgs in folders.items():
        node = top
        parts = label.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {"folders": {}})["folders"]
        node[parts[-1]] = {**node.get(parts[-1], {}), "messages": msgs}
    return {"INBOX": {"messages": inbox}, "": {"separator": "/", "folders": top}}


class GmailDouble:
    """One hoodiecrow process. `users` maps a login to its password and valid access tokens."""

    def __init__(
        self,
        storage: dict[str, Any],
        users: dict[str, dict[str, Any]] | None = None,
        plugins: list[str] | None = None,
        *,
        side_effects: bool = False,
    ) -> None:
        """`side_effects`: label changes move folder copies as on real Gmail (removing
        ``\\Inbox`` expunges the INBOX copy, adding a label appends a copy under a new UID)."""
        self.users = users or {
            "piper@gmail.test": {"password": "app-password", "tokens": ["initial-access-token"]}
        }
        self.storage = storage
        self.plugins = plugins
        self.side_effects = side_effects
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="gmail-double-"))

    def start(self) -> GmailDouble:
        config: dict[str, Any] = {
            "storage": self.storage,
            "users": {
                name: {
                    "password": u.get("password", ""),
                    "xoauth2": {"accessTokens": list(u.get("tokens", []))},
                }
                for name, u in self.users.items()
            },
            "port": 0,
            "sideEffects": self.side_effects,
        }
        if self.plugins is not None:
            config["plugins"] = self.plugins
        path = self._dir / "config.json"
        path.write_text(json.dumps(config))
        env = {**os.environ, "NODE_PATH": str(ROOT / "node_modules")}
        self._proc = subprocess.Popen(
            ["node", str(SERVER_JS), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"gmail double did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> GmailDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control channel (no login needed) --------------------------------------------------

    def _command(self, line: str) -> list[str]:
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            f = s.makefile("rwb")
            f.readline()  # greeting
            f.write(f"x1 {line}\r\n".encode())
            f.flush()
            out: list[str] = []
            while True:
                raw = f.readline().decode()
                if not raw:
                    raise RuntimeError("gmail double closed the control connection")
                if raw.startswith("x1 "):
                    if not raw.startswith("x1 OK"):
                        raise RuntimeError(raw.strip())
                    return out
                out.append(raw.rstrip("\r\n"))

    def stats(self) -> dict[str, Any]:
        """Open and peak connections (this control connection excluded), body bytes sent,
        label STOREs and XOAUTH2 attempts ({user, ok})."""
        (line,) = [x for x in self._command("XPIPER STATS") if x.startswith("* XPIPER ")]
        payload = line[len("* XPIPER ") :]
        return json.loads(json.loads(payload))

    def grant(self, user: str, token: str) -> None:
        self._command(f'XPIPER GRANT "{user}" "{token}"')

    def revoke(self, user: str) -> None:
        self._command(f'XPIPER REVOKE "{user}"')

    def set_side_effects(self, on: bool) -> None:
        """Switch Gmail's folder side effects of label changes at run time."""
        self._command(f"XPIPER SIDEEFFECTS {'ON' if on else 'OFF'}")

    def over_quota(self, fetches: int) -> None:
        """The next `fetches` UID FETCH commands fail with Gmail's bandwidth error."""
        self._command(f"XPIPER OVERQUOTA {fetches}")

    def limit_connections(self, n: int) -> None:
        """Refuse connections beyond n open, as Gmail does past its per-account limit."""
        self._command(f"XPIPER LIMIT {n}")

    def dump(self) -> dict[str, Any]:
        """The server's whole storage (XTOYBIRD STORAGE) for assertions."""
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            f = s.makefile("rwb")
            f.readline()
            f.write(b"x1 XTOYBIRD STORAGE\r\n")
            f.flush()
            head = f.readline().decode()
            size = int(head[head.rindex("{") + 1 : head.rindex("}")])
            body = f.read(size)
            f.readline()
            f.readline()
            return json.loads(body)

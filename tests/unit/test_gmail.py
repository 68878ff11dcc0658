"""Gmail mode's pure rules: which folders are mirrored, what each job does to labels,
which labels are refused, and which server errors are limits to back off from."""

from __future__ import annotations

import imaplib

import pytest
from imapclient.exceptions import LoginError

from app.config import ImapAccount
from app.jobs.models import JobType
from app.mail.folders import discarding_label_reason, is_gmail_archive
from executor import gmail, throttle
from executor.context import PermanentJobError
from executor.handlers.gmail_labels import plan_for_folder
from executor.imap_auth import ImapSignIn

FOLDERS = gmail.Folders(
    {
        "INBOX": frozenset({"\\hasnochildren"}),
        "[Gmail]": frozenset({"\\noselect", "\\haschildren"}),
        "[Gmail]/All Mail": frozenset({"\\all", "\\hasnochildren"}),
        "[Gmail]/Sent Mail": frozenset({"\\sent", "\\hasnochildren"}),
        "[Gmail]/Spam": frozenset({"\\junk"}),
        "[Gmail]/Trash": frozenset({"\\trash"}),
        "[Gmail]/Starred": frozenset({"\\flagged"}),
        "Work": frozenset({"\\hasnochildren"}),
    }
)


def test_gmail_mirrors_inbox_sent_and_chosen_labels_never_all_mail_spam_or_trash() -> None:
    assert FOLDERS.mirrored() == ["INBOX", "[Gmail]/Sent Mail"]
    extra = ["Work", "[Gmail]/All Mail", "[Gmail]/Spam", "[Gmail]/Trash", "[Gmail]", "Nope"]
    assert FOLDERS.mirrored(extra) == ["INBOX", "[Gmail]/Sent Mail", "Work"]
    assert FOLDERS.all_mail == "[Gmail]/All Mail"


def test_the_label_that_shows_a_message_in_a_folder() -> None:
    assert FOLDERS.label_of("INBOX") == "\\Inbox"
    assert FOLDERS.label_of("Work") == "Work"
    assert FOLDERS.label_of("[Gmail]/Sent Mail") is None
    assert FOLDERS.label_of("[Gmail]/Starred") is None
    assert gmail.folder_of_label("\\Inbox") == "INBOX"
    assert gmail.folder_of_label("Work") == "Work"


def test_clean_move_and_label_are_label_changes() -> None:
    clean = plan_for_folder(
        JobType.CLEAN, {"target_folder": "Secretary/Auto-Cleaned"}, FOLDERS, "INBOX"
    )
    assert clean == gmail.LabelPlan(("Secretary/Auto-Cleaned",), ("\\Inbox",), ("\\Seen",))
    move = plan_for_folder(JobType.MOVE, {"target_folder": "Receipts"}, FOLDERS, "INBOX")
    assert move == gmail.LabelPlan(("Receipts",), ("\\Inbox",))
    from_label = plan_for_folder(JobType.MOVE, {"target_folder": "Receipts"}, FOLDERS, "Work")
    assert from_label == gmail.LabelPlan(("Receipts",), ("Work",))
    for archive in ("Archive", "[Gmail]/All Mail", " archive "):
        assert is_gmail_archive(archive) or archive == "[Gmail]/All Mail"
        plan = plan_for_folder(JobType.MOVE, {"target_folder": archive}, FOLDERS, "INBOX")
        assert plan == gmail.LabelPlan((), ("\\Inbox",))
    back = plan_for_folder(JobType.MOVE, {"target_folder": "INBOX"}, FOLDERS, "Work")
    assert back == gmail.LabelPlan(("\\Inbox",), ("Work",))
    label = plan_for_folder(JobType.LABEL, {"label": "Later"}, FOLDERS, "INBOX")
    assert label == gmail.LabelPlan(("Later",))
    unlabel = plan_for_folder(JobType.LABEL, {"label": "Work", "remove": True}, FOLDERS, "Work")
    assert unlabel == gmail.LabelPlan((), ("Work",))


@pytest.mark.parametrize("label", ["\\Trash", "\\Spam", "\\trash", "[Gmail]/Trash", "Spam", "Junk"])
def test_labels_that_delete_by_another_name_are_refused(label: str) -> None:
    assert discarding_label_reason(label)
    with pytest.raises(PermanentJobError):
        plan_for_folder(JobType.LABEL, {"label": label}, FOLDERS, "INBOX")
    with pytest.raises(PermanentJobError):
        plan_for_folder(JobType.MOVE, {"target_folder": label}, FOLDERS, "INBOX")
    assert discarding_label_reason("Receipts") is None


def test_labels_are_decoded_from_modified_utf7_and_numbers() -> None:
    assert gmail.decode_labels([b"\\Inbox", b"&AMk-t&AOk-", 2024, b"Work", b"Work"]) == (
        "\\Inbox",
        "Été",
        "2024",
        "Work",
    )
    assert gmail.as_msgid(b"1278455344230334865") == 1278455344230334865
    assert gmail.as_msgid(None) is None


@pytest.mark.parametrize(
    ("text", "gmail_server", "kind"),
    [
        ("[ALERT] Too many simultaneous connections. (Failure)", True, throttle.CONNECTIONS),
        (
            "command: CAPABILITY => [ALERT] Too many simultaneous connections.",
            False,
            throttle.CONNECTIONS,
        ),
        (
            "[OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)",
            True,
            throttle.BANDWIDTH,
        ),
        ("Account exceeded command or bandwidth limits", False, throttle.BANDWIDTH),
        ("[OVERQUOTA] Quota exceeded (mailbox full)", True, throttle.BANDWIDTH),
        ("[OVERQUOTA] Quota exceeded (mailbox full)", False, None),
        ("[AUTHENTICATIONFAILED] Invalid credentials (Failure)", True, None),
    ],
)
def test_server_limits_are_told_apart_from_other_errors(
    text: str, gmail_server: bool, kind: str | None
) -> None:
    assert throttle.classify(imaplib.IMAP4.error(text), gmail=gmail_server) == kind


def test_a_limit_behind_another_error_is_found_and_backoffs_grow_to_a_cap() -> None:
    try:
        try:
            raise imaplib.IMAP4.abort("[ALERT] Too many simultaneous connections.")
        except imaplib.IMAP4.abort as inner:
            raise RuntimeError("cannot reach IMAP server") from inner
    except RuntimeError as outer:
        assert throttle.classify(outer) == throttle.CONNECTIONS
    waits = [throttle.backoff(throttle.CONNECTIONS, n) for n in range(10)]
    assert waits == sorted(waits) and waits[0] == throttle.BACKOFF_BASE[throttle.CONNECTIONS]
    assert max(waits) == throttle.BACKOFF_MAX
    assert throttle.backoff(throttle.BANDWIDTH, 0) > throttle.backoff(throttle.CONNECTIONS, 0)


class _Tokens:
    def __init__(self) -> None:
        self.rejected_tokens: list[str] = []

    def access_token(self) -> str:
        return "token"

    def rejected(self, token: str) -> None:
        self.rejected_tokens.append(token)


class _BusyServer:
    """An IMAP client whose XOAUTH2 sign-in Gmail refuses for too many connections."""

    def oauth2_login(self, user: str, token: str) -> None:
        raise LoginError("b'[ALERT] Too many simultaneous connections. (Failure)'")


def test_too_many_connections_at_an_xoauth2_sign_in_is_a_limit_not_a_bad_token() -> None:
    sign_in = ImapSignIn(ImapAccount("imap.gmail.test", 993, "me@gmail.test", "", True))
    tokens = _Tokens()
    sign_in.tokens = tokens  # type: ignore[assignment]
    with pytest.raises(LoginError) as caught:
        sign_in.login(_BusyServer())  # type: ignore[arg-type]
    assert throttle.classify(caught.value) == throttle.CONNECTIONS
    assert tokens.rejected_tokens == []  # the token was not thrown away, no "sign in again"

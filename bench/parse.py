"""CPU per message of a sync's parse step, stage by stage, on the bench mailbox.

    .venv/bin/python bench/parse.py [--messages 10000] [--rounds 5] [--against main]

What a sync's parse processes spend on each message (executor/parsing.py):
`parse_message` without and with the "mentions you" check, the scoring
(`score_row`), the mirror row and its JSON for `upsert_emails`
(executor/mirror_writes.py), and all of it together (`parse_raw` in batches
as the sync hands them over, then rows and JSON). The mailbox is
bench/sync.py's: `generate_mailbox` plus `--big-share` of messages longer
than the fetch prefix, each cut as the sync fetches it (whole header, the
first BODY_PREFIX_BYTES of the body). The reference in the same process is
the standard library's parser (`email.message_from_bytes`, compat32 policy),
which only splits a message into parts and decodes nothing.

Figures are CPU time of one process (`time.process_time`), best of
`--rounds`: on a shared machine the wall clock mostly measures the others.

`--against REF` measures the code of a git revision too (its app/ and
executor/ exported to a temporary folder) in alternating rounds, each side in
a fresh process over the same messages, prints both and the ratio, and
checks that both wrote the same rows (a hash of the JSON and the problems).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where
# bench/queue.py would shadow the standard library's `queue`. A `--root DIR`
# worker imports the product from DIR (another revision's export) instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = Path(sys.argv[sys.argv.index("--root") + 1]) if "--root" in sys.argv else HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import email  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from email import policy  # noqa: E402

from app.mail.identity import Identity  # noqa: E402
from app.mail.mime import parse_message  # noqa: E402
from executor import mirror_writes, parsing  # noqa: E402

ME = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",))
BATCH = 200  # bench/sync.py's batch: what one parse_raw call gets
STAGES = ("stdlib", "parse_off", "parse_on", "score", "row_json", "total")
# Messages as tuples (uid, flags, internal date, size, body): plain data that
# any revision's RawMessage can be built from.
Fetched = tuple[int, tuple[str, ...], datetime, int, bytes]


def bench_mailbox(messages: int, big_share: float) -> list[Fetched]:
    """bench/sync.py's mailbox, each message as the first sync fetches it."""
    from app.demo.mailbox import generate_mailbox
    from bench.sync import big_messages
    from executor.handlers.sync import BODY_PREFIX_BYTES

    n_big = round(messages * big_share)
    now = datetime(2026, 11, 20, tzinfo=UTC)  # the same bytes every run
    msgs = generate_mailbox(messages - n_big, now=now) + big_messages(n_big)
    out = []
    for uid, m in enumerate(msgs, 1):
        cut = m.raw.find(b"\r\n\r\n") + 4
        body = m.raw[:cut] + m.raw[cut : cut + BODY_PREFIX_BYTES]
        out.append((uid, m.flags, m.internal_date, len(m.raw), body))
    return out


def _cpu(fn: Callable[[], object], count: int) -> float:
    """CPU microseconds per message of one call of `fn` over `count` messages."""
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / count * 1e6


def measure(fetched: list[Fetched]) -> tuple[dict[str, float], str]:
    """One round: CPU us per message for each stage, and a hash of the result."""
    raws = [
        parsing.RawMessage(uid=u, flags=f, internal_date=d, size=s, modseq=None, body=b)
        for u, f, d, s, b in fetched
    ]
    batches = [raws[i : i + BATCH] for i in range(0, len(raws), BATCH)]
    n = len(raws)
    bodies = [r.body for r in raws]
    parsed, _ = parsing.parse_raw(raws, ME)

    def stdlib() -> None:
        for body in bodies:
            msg = email.message_from_bytes(body, policy=policy.compat32)
            for _part in msg.walk():
                pass

    def score() -> None:
        for m, raw in zip(parsed, raws, strict=True):
            parsing._scores(m.parsed, raw, m.mentions_you, ME, [])

    def row_json() -> None:
        for i in range(0, n, BATCH):
            mirror_writes._dumps([mirror_writes._row("INBOX", 1, m) for m in parsed[i : i + BATCH]])

    def total() -> None:
        for batch in batches:
            done, _problems = parsing.parse_raw(batch, ME)
            mirror_writes._dumps([mirror_writes._row("INBOX", 1, m) for m in done])

    figures = {
        "stdlib": _cpu(stdlib, n),
        "parse_off": _cpu(lambda: [parse_message(b) for b in bodies], n),
        "parse_on": _cpu(lambda: [parse_message(b, identity=ME) for b in bodies], n),
        "score": _cpu(score, n),
        "row_json": _cpu(row_json, n),
        "total": _cpu(total, n),
    }
    digest = hashlib.sha256()
    for batch in batches:
        done, problems = parsing.parse_raw(batch, ME)
        rows = [mirror_writes._row("INBOX", 1, m) for m in done]
        text = mirror_writes._dumps(rows)
        digest.update(text.encode() if isinstance(text, str) else text)
        digest.update(json.dumps(problems, sort_keys=True).encode())
    return figures, digest.hexdigest()


def _worker(data: Path) -> None:
    """`--worker`: one round in this process, figures as JSON on stdout."""
    fetched = pickle.loads(data.read_bytes())
    figures, digest = measure(fetched)
    print(json.dumps({"figures": figures, "digest": digest, "module": parsing.__file__}))


def _export(ref: str, into: Path) -> None:
    """The product packages of `ref` (app/, executor/) under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "app", "executor"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _round(root: Path, data: Path) -> tuple[dict[str, float], str]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(data), "--root", str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["module"].startswith(str(root)), result["module"]  # not an installed copy
    return result["figures"], result["digest"]


def _best(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {s: min(r[s] for r in rounds) for s in STAGES}


def _print(label: str, f: dict[str, float], base: dict[str, float] | None = None) -> None:
    def cell(stage: str) -> str:
        text = f"{f[stage]:6.1f} us"
        if base is not None:
            text += f" ({base[stage] / f[stage]:.2f}x as fast)"
        return text

    print(f"{label}:")
    print(f"  parse_message       : {cell('parse_off')} without the check")
    print(f"  parse_message       : {cell('parse_on')} with the check")
    print(f"  score_row           : {cell('score')}")
    print(f"  row + JSON          : {cell('row_json')}")
    print(
        f"  parse_raw + rows    : {cell('total')}  = "
        f"{f['total'] / f['stdlib']:.2f}x the stdlib parser ({f['stdlib']:.1f} us, reference)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--big-share", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=5, help="best of this many rounds")
    parser.add_argument("--against", metavar="REF", help="also measure this git revision")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        _worker(args.worker)
        return
    fetched = bench_mailbox(args.messages, args.big_share)
    print(
        f"{len(fetched)} messages ({args.big_share:.0%} over the fetch prefix), "
        f"CPU us per message, best of {args.rounds} rounds"
    )
    if args.against is None:
        rounds = [measure(fetched)[0] for _ in range(args.rounds)]
        _print("this tree", _best(rounds))
        return
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        base_root = Path(tmp) / "base"
        base_root.mkdir()
        _export(args.against, base_root)
        data = Path(tmp) / "messages.pickle"
        data.write_bytes(pickle.dumps(fetched))
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        digests: set[tuple[str, str]] = set()
        for _ in range(args.rounds):  # alternating, so load from elsewhere hits both
            base_figures, base_digest = _round(base_root, data)
            our_figures, our_digest = _round(HERE.parent, data)
            theirs.append(base_figures)
            ours.append(our_figures)
            digests.add((base_digest, our_digest))
    base, now = _best(theirs), _best(ours)
    _print(args.against, base)
    _print("this tree", now, base)
    same = all(a == b for a, b in digests)
    print(f"rows and problems    : {'identical' if same else 'DIFFERENT'} to {args.against}'s")


if __name__ == "__main__":
    main()

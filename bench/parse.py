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

Figures are CPU time of one process (`time.process_time`), each chunk's
best of `--rounds`: on a shared machine the wall clock mostly measures the
others.

`--against REF` measures the code of a git revision too (its app/ and
executor/ exported to a temporary folder): two worker processes, one per
revision, over the same messages, taking turns every `--chunks`-th of the
mailbox so that load from elsewhere hits both alike. It prints both, their
ratio, and whether both wrote the same rows (a hash of the JSON and the
problems).
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
from typing import Any  # noqa: E402

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
    msgs = generate_mailbox(messages - n_big, now=now) + list(big_messages(n_big))
    out = []
    for uid, m in enumerate(msgs, 1):
        cut = m.raw.find(b"\r\n\r\n") + 4
        body = m.raw[:cut] + m.raw[cut : cut + BODY_PREFIX_BYTES]
        out.append((uid, m.flags, m.internal_date, len(m.raw), body))
    return out


class Stages:
    """The stages over the mailbox's messages, run one chunk at a time: a chunk is
    `chunks`-th of the mailbox, so two workers can take turns every fraction
    of a second and see the same load from elsewhere."""

    def __init__(self, fetched: list[Fetched], chunks: int) -> None:
        self.raws = [
            parsing.RawMessage(uid=u, flags=f, internal_date=d, size=s, modseq=None, body=b)
            for u, f, d, s, b in fetched
        ]
        size = -(-len(self.raws) // chunks // BATCH) * BATCH  # whole batches
        self.chunks = [self.raws[i : i + size] for i in range(0, len(self.raws), size)]
        parsed, _ = parsing.parse_raw(self.raws, ME)  # also warms every lazy compile
        for raw in self.raws[:BATCH]:  # and the standard library's parser
            email.message_from_bytes(raw.body, policy=policy.compat32)
        by_uid = {m.uid: m for m in parsed}
        self.parsed = [[by_uid[r.uid] for r in chunk if r.uid in by_uid] for chunk in self.chunks]

    def run(self, stage: str, chunk: int) -> float:
        """CPU seconds of `stage` over chunk number `chunk`."""
        raws = self.chunks[chunk]
        parsed = self.parsed[chunk]
        bodies = [r.body for r in raws]
        run: Callable[[], object]
        if stage == "stdlib":

            def run() -> None:
                for body in bodies:
                    for _part in email.message_from_bytes(body, policy=policy.compat32).walk():
                        pass

        elif stage == "parse_off":

            def run() -> None:
                for body in bodies:
                    parse_message(body)

        elif stage == "parse_on":

            def run() -> None:
                for body in bodies:
                    parse_message(body, identity=ME)

        elif stage == "score":
            by_uid = {r.uid: r for r in raws}

            def run() -> None:
                for m in parsed:
                    parsing._scores(m.parsed, by_uid[m.uid], m.mentions_you, ME, [])

        elif stage == "row_json":

            def run() -> None:
                for i in range(0, len(parsed), BATCH):
                    rows = [mirror_writes._row("INBOX", 1, m) for m in parsed[i : i + BATCH]]
                    mirror_writes._dumps(rows)

        else:  # "total": what a parse process does with each batch

            def run() -> None:
                for i in range(0, len(raws), BATCH):
                    done, _problems = parsing.parse_raw(raws[i : i + BATCH], ME)
                    mirror_writes._dumps([mirror_writes._row("INBOX", 1, m) for m in done])

        t0 = time.process_time()
        run()
        return time.process_time() - t0

    def digest(self) -> str:
        """A hash of every row's JSON and every problem, batch by batch."""
        digest = hashlib.sha256()
        for i in range(0, len(self.raws), BATCH):
            done, problems = parsing.parse_raw(self.raws[i : i + BATCH], ME)
            text = mirror_writes._dumps([mirror_writes._row("INBOX", 1, m) for m in done])
            digest.update(text.encode() if isinstance(text, str) else text)
            digest.update(json.dumps(problems, sort_keys=True).encode())
        return digest.hexdigest()


def _worker(data: Path, chunks: int) -> None:
    """`--worker`: answers `STAGE CHUNK` lines with CPU seconds, `digest` with the hash."""
    stages = Stages(pickle.loads(data.read_bytes()), chunks)
    print(json.dumps({"ready": parsing.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() == "digest":
            print(json.dumps(stages.digest()), flush=True)
        else:
            stage, chunk = line.split()
            print(json.dumps(stages.run(stage, int(chunk))), flush=True)


class _Side:
    """A worker process measuring the product found under `root`."""

    def __init__(self, root: Path, data: Path, chunks: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(data)]
            + ["--chunks", str(chunks), "--root", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        module = self._ask(None)["ready"]
        assert module.startswith(str(root)), module  # not an installed copy

    def _ask(self, line: str | None) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def run(self, stage: str, chunk: int) -> float:
        return float(self._ask(f"{stage} {chunk}"))

    def digest(self) -> str:
        return str(self._ask("digest"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def _export(ref: str, into: Path) -> None:
    """The product packages of `ref` (app/, executor/) under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "app", "executor"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _rounds(sides: list[Any], chunks: int, rounds: int, count: int) -> list[dict[str, float]]:
    """Per side and stage, us per message: the sum over the chunks of each
    chunk's best of `rounds`. Within a round the sides take turns chunk by
    chunk (and change who goes first), so a burst of load from elsewhere
    spoils one chunk's turn of both sides, which another round makes up."""
    best = [{s: [float("inf")] * chunks for s in STAGES} for _ in sides]
    for r in range(rounds):
        for stage in STAGES:
            for chunk in range(chunks):
                order = list(range(len(sides)))
                if (r + chunk) % 2:
                    order.reverse()
                for i in order:
                    seconds = sides[i].run(stage, chunk)
                    best[i][stage][chunk] = min(best[i][stage][chunk], seconds)
    return [{s: sum(side[s]) / count * 1e6 for s in STAGES} for side in best]


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
    parser.add_argument("--chunks", type=int, default=10, help="turns per stage and round")
    parser.add_argument("--against", metavar="REF", help="also measure this git revision")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        _worker(args.worker, args.chunks)
        return
    fetched = bench_mailbox(args.messages, args.big_share)
    print(
        f"{len(fetched)} messages ({args.big_share:.0%} over the fetch prefix), "
        f"CPU us per message, best of {args.rounds} rounds"
    )
    if args.against is None:
        (now,) = _rounds([Stages(fetched, args.chunks)], args.chunks, args.rounds, len(fetched))
        _print("this tree", now)
        return
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        base_root = Path(tmp) / "base"
        base_root.mkdir()
        _export(args.against, base_root)
        data = Path(tmp) / "messages.pickle"
        data.write_bytes(pickle.dumps(fetched))
        sides = [_Side(base_root, data, args.chunks), _Side(HERE.parent, data, args.chunks)]
        try:
            base, now = _rounds(sides, args.chunks, args.rounds, len(fetched))
            same = sides[0].digest() == sides[1].digest()
        finally:
            for side in sides:
                side.close()
    _print(args.against, base)
    _print("this tree", now, base)
    print(f"rows and problems    : {'identical' if same else 'DIFFERENT'} to {args.against}'s")


if __name__ == "__main__":
    main()

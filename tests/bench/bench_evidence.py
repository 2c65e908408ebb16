"""Evidence costs next to floors measured in the same run (``python -m tests.bench evidence``).

* receipts appended per second (emission bytes, leaf hash, tree, a signed checkpoint
  every 1,000), against hashlib SHA-256 of the same bytes; and receipts signed and
  appended, against one Ed25519 sign;
* ``verify_log`` over 10**5 receipt entries with a checkpoint every 1,000, against
  SHA-256 of the same bytes (the floor of any replay);
* ``verify_bundle`` of a consumed request's sealed bundle, against the signature
  checks it must make (N × one Ed25519 verify), and sealing it.

Entries are real ``keyturn_receipt`` envelopes from a full approval flow, re-signed
with distinct receipt ids (about 600–1,200 bytes each).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from core.bundle import bundle_bytes, verify_bundle
from core.keys import verify_signature
from core.receipt_log import ReceiptLog, verify_log
from core.receipts import entry_bytes, sign_receipt, verify_receipt
from tests.bench.timing import per_op, row
from tests.core.test_bundle_flow import KEYTURN, ORIGIN, consumed
from tests.fakes import T0

ENTRIES = 100_000
CHECKPOINT_EVERY = 1_000
DISTINCT = 2_000  # signed envelopes cycled through the log


def _median_run(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    flow = consumed()
    receipts = [verify_receipt(e, trusted_signers=[KEYTURN.did]) for _, e in flow.logged]
    envelopes = [
        sign_receipt(replace(receipts[i % len(receipts)], receipt_id=f"rc-{i}"), KEYTURN)
        for i in range(DISTINCT)
    ]
    entries = [entry_bytes(envelopes[i % DISTINCT]) for i in range(ENTRIES)]
    mean_size = sum(len(e) for e in entries) / len(entries)
    print(f"receipt entries: {ENTRIES:,}, mean {mean_size:,.0f} bytes")

    def hash_all() -> None:
        for entry in entries:
            hashlib.sha256(entry).digest()

    sha_floor = _median_run(hash_all)
    print(row("floor: hashlib SHA-256 of one entry", sha_floor / ENTRIES))

    notes = _appends(envelopes, entries, sha_floor)
    _signing(receipts)
    _verify_log(entries, notes, sha_floor)
    _bundles()


def _appends(
    envelopes: list[dict[str, object]], entries: list[bytes], sha_floor: float
) -> list[str]:
    notes: list[str] = []

    def append_all() -> None:
        notes.clear()
        log = ReceiptLog(ORIGIN, KEYTURN, started_at=T0, checkpoint_every=CHECKPOINT_EVERY)
        for i in range(ENTRIES):
            appended = log.append_receipt(envelopes[i % DISTINCT], now=T0)
            if appended.checkpoint is not None:
                notes.append(appended.checkpoint.signed_note)

    seconds = _median_run(append_all)
    print(
        row(
            f"append receipt (bytes + leaf + tree), checkpoint every {CHECKPOINT_EVERY:,}",
            seconds / ENTRIES,
            sha_floor / ENTRIES,
            "SHA floor",
        )
    )

    def append_bytes() -> None:
        log = ReceiptLog(ORIGIN, KEYTURN, started_at=T0, checkpoint_every=CHECKPOINT_EVERY)
        for entry in entries:
            log.append(entry, now=T0)

    seconds = _median_run(append_bytes)
    print(
        row(
            "append stored bytes only (leaf + tree + checkpoints)",
            seconds / ENTRIES,
            sha_floor / ENTRIES,
            "SHA floor",
        )
    )
    return notes


def _signing(receipts: list[object]) -> None:
    message = b"x" * 43
    sign_floor = per_op(lambda: KEYTURN.sign(message))
    log = ReceiptLog(ORIGIN, KEYTURN, started_at=T0, checkpoint_every=CHECKPOINT_EVERY)
    receipt = receipts[1]

    def emit() -> None:
        log.append_receipt(sign_receipt(receipt, KEYTURN), now=T0)  # type: ignore[arg-type]

    print(row("sign + append one receipt (approval)", per_op(emit), sign_floor, "Ed25519 sign"))


def _verify_log(entries: list[bytes], notes: list[str], sha_floor: float) -> None:
    keys = {ORIGIN: KEYTURN.public_key}
    seconds = _median_run(lambda: verify_log(entries, notes, keys))
    label = f"verify_log {ENTRIES:,} entries, {len(notes)} checkpoints"
    print(row(label + " (per entry)", seconds / ENTRIES, sha_floor / ENTRIES, "SHA floor"))
    per_1e5, floor_1e5 = seconds * 1e5 / ENTRIES, sha_floor * 1e5 / ENTRIES
    print(
        f"{'verify_log per 10^5 entries':<58} {per_1e5:>12.3f} s"
        f"    SHA floor {floor_1e5:.3f} s   {seconds / sha_floor:6.2f}×"
    )


def _bundles() -> None:
    flow = consumed()
    envelope = flow.seal()
    data = bundle_bytes(envelope)
    # Signatures verify_bundle checks: bundle, WPC, checkpoint, each receipt, grant.
    signatures = 3 + len(envelope["payload"]["receipts"]) + ("grant" in envelope["payload"])
    digest = hashlib.sha256(b"m").hexdigest()[:43].encode()
    signature = KEYTURN.sign(digest)
    verify_floor = per_op(lambda: verify_signature(KEYTURN.public_key, digest, signature))
    trust = [KEYTURN.did]
    verify = per_op(lambda: verify_bundle(data, trusted_keyturn_dids=trust))
    label = f"verify_bundle ({len(data):,} bytes, {signatures} signatures)"
    print(row(label, verify, signatures * verify_floor, f"{signatures}× Ed25519 verify"))
    checkpoint = flow.log.checkpoint(flow.now)
    from core.bundle import seal_bundle
    from tests.core.test_bundle_flow import WPC

    def seal() -> None:
        seal_bundle(
            flow.request,
            wpc=WPC,
            receipts=flow.logged,
            proofs=flow.log,
            checkpoint=checkpoint,
            signer=KEYTURN,
            bundle_id="b",
            now=flow.now + timedelta(seconds=1),
            grant=flow.grant,
        )

    print(row("seal_bundle (checks its own contents first)", per_op(seal), verify, "verify_bundle"))


if __name__ == "__main__":
    main()

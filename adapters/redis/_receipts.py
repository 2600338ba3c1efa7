"""Receipts: how a delivery finds its way back to its node, batch and task.

A receipt is ``rid + member + tag``: the task's 20-character rid, the leased
batch's member ``<bid>:<owner>`` (empty for a task popped without lease), and,
over several nodes, ``@<index>`` of the node holding it. Building and parsing them
is the per-task Python work of the hot path, so it is kept to slices and appends.
"""

from __future__ import annotations

from collections.abc import Sequence

from sergeant.protocols.broker import Delivery

from ._node import HEADER_LEN, RID_LEN


def deliveries(entries: list[bytes], again: list[int], suffix: str) -> list[Delivery]:
    """Deliveries of stored ``entries``; each receipt is its rid plus ``suffix``.

    ``again`` lists the (1-based) positions of entries delivered before: only
    their counts are parsed, everything else is a first delivery. An entry holds
    the count from before this delivery, hence ``+ 1``.
    """
    r, h = RID_LEN, HEADER_LEN
    out = [Delivery(e[:r].decode() + suffix, e[h:]) for e in entries]
    for i in again:
        e = entries[i - 1]
        out[i - 1] = Delivery(out[i - 1].receipt, e[h:], int(e[r + 1 : h], 16) + 1)
    return out


def by_node(deliveries: Sequence[Delivery], nodes: int) -> dict[int, list[str]]:
    """Receipts grouped by node index, tags stripped; foreign ones dropped."""
    if nodes == 1:
        return {0: [d.receipt for d in deliveries]}
    groups: dict[int, list[str]] = {}
    for d in deliveries:
        body, sep, index = d.receipt.rpartition("@")
        if sep and index.isdigit() and int(index) < nodes:
            groups.setdefault(int(index), []).append(body)
    return groups


def batch_groups(receipts: list[str]) -> list[str]:
    """Script arguments ``member, rids joined`` per leased batch.

    Receipts of one reserve are usually acked together, so one batch is the fast
    path. Receipts without a batch (popped tasks, forged ones) are left out.
    """
    r = RID_LEN
    found = {receipt[r:] for receipt in receipts}
    if len(found) == 1:
        (member,) = found
        return [member, "".join([x[:r] for x in receipts])] if ":" in member else []
    batches: dict[str, list[str]] = {member: [] for member in found if ":" in member}
    for receipt in receipts:
        rids = batches.get(receipt[r:])
        if rids is not None:
            rids.append(receipt[:r])
    args: list[str] = []
    for member, rids in batches.items():
        args += [member, "".join(rids)]
    return args


def members(receipts: list[str]) -> list[str]:
    """The distinct leased batches the receipts belong to."""
    found = {r[RID_LEN:] for r in receipts}
    return [m for m in found if ":" in m]

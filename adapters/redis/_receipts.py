"""Receipts: how a delivery finds its way back to its node, batch and task.

A receipt is ``rid + member + tag``: the task's 20-character rid, the leased
batch's member ``<bid>:<owner>`` (empty for a task popped without lease), and,
over several nodes, ``@<index>`` of the node holding it. Building and parsing them
is the per-task Python work of the hot path, so it is kept to slices and appends.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from sergeant.protocols.broker import Delivery, OpenDelivery

from ._node import HEADER_LEN, RID_LEN

# Deliveries are built as OpenDelivery (plain slot stores, no frozen descriptor
# calls: this runs per task) and then become Delivery. Should ``Delivery`` change
# its fields, fail at import, not with half-built objects.
_FIELDS = ("receipt", "payload", "deliveries")
if tuple(f.name for f in attrs.fields(Delivery)) != _FIELDS:  # pragma: no cover
    raise ImportError(f"Delivery no longer has exactly the fields {_FIELDS}")
_set_count = getattr(Delivery, _FIELDS[2]).__set__
_new = object.__new__
_NEVER = b"0" * (HEADER_LEN - RID_LEN - 1)  # the count of an entry never delivered


def deliveries(
    entries: list[bytes], again: list[int] | None, member: str, tag: str
) -> tuple[list[Delivery], list[str]]:
    """Deliveries of stored ``entries``, and their receipts without ``tag``.

    A receipt is the entry's rid, the batch ``member`` and the node ``tag``. The
    untagged receipts are what an ack of the whole batch will be compared with
    (see ``batch_groups``). ``again`` lists the (1-based) positions of entries
    delivered before (a script computes it server-side), or is None to find them
    here: only their counts are parsed, everything else is a first delivery. An
    entry holds the count from before this delivery, hence ``+ 1``.
    """
    r, h = RID_LEN, HEADER_LEN
    if again is None:
        again = [i for i, e in enumerate(entries, 1) if e[r + 1 : h] != _NEVER]
    out: list[Delivery] = []
    bodies: list[str] = []
    keep, note = out.append, bodies.append
    for e in entries:
        d = _new(OpenDelivery)
        body = e[:r].decode() + member
        d.receipt = body + tag if tag else body
        d.payload = e[h:]
        d.deliveries = 1
        d.__class__ = Delivery  # type: ignore[assignment]
        keep(d)  # type: ignore[arg-type]
        note(body)
    for i in again:
        e = entries[i - 1]
        _set_count(out[i - 1], int(e[r + 1 : h], 16) + 1)
    return out, bodies


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


def batch_groups(
    receipts: list[str], held: dict[str, list[str]] | None = None
) -> list[str]:
    """Script arguments ``member, rids joined`` per leased batch.

    With ``held`` (member -> the untagged receipts a reserve handed out, for
    acks only), a batch acked whole is sent as ``member, "*"``: the script drops
    its hash instead of deleting a thousand fields, and the client neither slices
    nor joins the rids. A batch's hash only ever holds tasks handed out in it, so
    dropping it is exactly acking them all. Receipts of one reserve are usually
    acked together, in order, so that is the fast path. Receipts without a batch
    (popped tasks, forged ones) are left out. Batches come in the order their
    first receipt does, so that a release of several puts them back in order.
    """
    r = RID_LEN
    if held is not None and receipts:
        member = receipts[0][r:]
        if held.get(member) == receipts:
            held.pop(member, None)
            return [member, "*"]
    # In first-seen order: a release puts batches back in the order given.
    found = dict.fromkeys([receipt[r:] for receipt in receipts])
    if len(found) == 1:
        (member,) = found
        return [member, "".join([x[:r] for x in receipts])] if ":" in member else []
    batches: dict[str, list[str]] = {member: [] for member in found if ":" in member}
    for receipt in receipts:
        group = batches.get(receipt[r:])
        if group is not None:
            group.append(receipt)
    args: list[str] = []
    for member, group in batches.items():
        if held is not None and held.get(member) == group:
            held.pop(member, None)
            args += [member, "*"]
        else:
            args += [member, "".join([x[:r] for x in group])]
    return args


def members(receipts: list[str]) -> list[str]:
    """The distinct leased batches the receipts belong to."""
    found = {r[RID_LEN:] for r in receipts}
    return [m for m in found if ":" in m]

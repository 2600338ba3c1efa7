"""Mixed producer-consumer: a worker that pushes follow-up tasks to another queue.

Run it: ``python examples/mixed_producer_consumer.py``. Every worker is also a
producer: ``self.push_task(kwargs, queue=...)`` from inside ``work`` chains steps.
Here "orders" are charged, and each charge pushes a receipt to the "emails" queue.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

import sergeant


class Orders(sergeant.Worker):
    def work(self, task: sergeant.Task) -> Any:
        order = task.kwargs
        print(f"charged {order['customer']} {order['amount']:.2f}")
        self.push_task({"to": order["customer"], "amount": order["amount"]},
                       queue="emails")  # fmt: skip


class Emails(sergeant.Worker):
    def work(self, task: sergeant.Task) -> Any:
        print(f"emailed a receipt to {task.kwargs['to']}")


def worker(cls: type[sergeant.Worker], name: str, broker: SqliteBroker, n: int) -> Any:
    return cls(
        config=sergeant.WorkerConfig(name=name, max_tasks_per_run=n),
        broker=broker, codec=PickleCodec(), executor=SerialExecutor(),
        watchdog=NullWatchdog(),
    )  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        broker = SqliteBroker(str(Path(directory) / "shop.db"))
        orders = [
            {"customer": c, "amount": a} for c, a in (("ada", 12.5), ("bob", 3.0))
        ]
        shop = sergeant.Producer(broker=broker, codec=PickleCodec(), queue="orders")
        shop.push_tasks(orders)

        worker(Orders, "orders", broker, len(orders)).run()
        print(f"emails waiting: {shop.number_of_enqueued_tasks('emails')}")
        worker(Emails, "emails", broker, len(orders)).run()
        print(f"emails waiting: {shop.number_of_enqueued_tasks('emails')}")
        broker.close()


if __name__ == "__main__":
    main()

"""Subscribe to an edge-tc daemon's classifications and print them (or collect them).

    .venv/bin/python tools/tc_subscribe.py                          # tc.all on the default bind
    .venv/bin/python tools/tc_subscribe.py --connect tcp://ap:5556 --topic phy --topic app
    .venv/bin/python tools/tc_subscribe.py --count 100 --json > out.jsonl

One line per message: packet id, sample span, latency and each task's label and probability, or
the payload as JSON (`--json`). As a library: `collect(endpoint, count, topics)` returns the
decoded messages (`edge_daemon.publisher.Message`: topic name and payload dict).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from edge_daemon.publisher import TOPIC_ALL, Message, PublisherConfig, Subscriber


def collect(
    endpoint: str,
    count: int | None,
    topics: Sequence[str] = (TOPIC_ALL,),
    idle_timeout_s: float = 5.0,
) -> list[Message]:
    """Up to `count` messages (None: until none came for `idle_timeout_s`)."""
    with Subscriber(endpoint, topics) as sub:
        return sub.collect(count, idle_timeout_s)


def format_line(message: Message) -> str:
    """`[phy] #17 123456..126456 1.20 ms phy=802.11n (0.97) ...`"""
    p = message.payload
    labels = " ".join(
        f"{task}={entry['label']} ({entry['probability']:.2f})"
        for task, entry in p["labels"].items()
    )
    return (
        f"[{message.topic}] #{p['packet_id']} {p['sample_start']}..{p['sample_end']} "
        f"{p['latency_ms']:.2f} ms {labels}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default=PublisherConfig().bind, help="the daemon's bind")
    parser.add_argument(
        "--topic", action="append", dest="topics", metavar="NAME",
        help="all (default) or a task name (phy, frame, app_type, app); repeatable",
    )  # fmt: skip
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--json", action="store_true", help="print each payload as JSON")
    parser.add_argument(
        "--idle-timeout", type=float, default=None, metavar="S",
        help="stop when nothing came for S seconds (default: wait forever)",
    )  # fmt: skip
    parser.add_argument(
        "--curve-server-key", default="", metavar="FILE",
        help="the daemon's public CURVE certificate (*.key) when its publisher uses CurveZMQ",
    )  # fmt: skip
    parser.add_argument(
        "--curve-client-key", default="", metavar="FILE",
        help="this client's secret certificate (*.key_secret) if the daemon authorizes clients",
    )  # fmt: skip
    args = parser.parse_args(argv)
    received = 0
    topics = args.topics or [TOPIC_ALL]
    with Subscriber(args.connect, topics, curve_server_key_file=args.curve_server_key,
                    curve_client_key_file=args.curve_client_key) as sub:  # fmt: skip
        try:
            while args.count is None or received < args.count:
                message = sub.recv(args.idle_timeout if args.idle_timeout else 1.0)
                if message is None:
                    if args.idle_timeout:
                        break
                    continue
                received += 1
                if args.json:
                    print(json.dumps({"topic": message.topic, **message.payload}), flush=True)
                else:
                    print(format_line(message), flush=True)
        except KeyboardInterrupt:
            pass
    print(f"{received} message(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

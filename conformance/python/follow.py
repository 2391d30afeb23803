# Follows a Durable Streams JSON stream with the official Python client until it has a number
# of items, printing one JSON line per batch, then a final line with every item and the offset
# to resume from: the same lines as `../client/follow.mjs`, so that one test drives both.
#
# usage: python follow.py <stream-url> <long-poll|sse> <offset> <count>
import json
import sys

from durable_streams import stream


def main() -> int:
    if len(sys.argv) != 5:
        print("usage: python follow.py <stream-url> <long-poll|sse> <offset> <count>", file=sys.stderr)
        return 2
    url, live, offset, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    items = []
    last = offset
    with stream(url, offset=offset, live=live, timeout=30.0) as res:
        # `json_batches` keeps each answer's (or each SSE data event's) items together, with the
        # offset after them: what a client saves to resume from.
        for event in res.iter_events(mode="json_batches"):
            items.extend(event.data)
            last = event.next_offset
            line = {"items": event.data, "offset": last, "upToDate": event.up_to_date}
            print(json.dumps(line), flush=True)
            if len(items) >= count:
                break
    print(json.dumps({"done": True, "items": items, "offset": last}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

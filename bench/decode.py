"""The validate stage's two decoders on the bench's event mix: how much the fast path takes.

    python -m bench.decode [--events N]

Decodes `N` synthetic events (consumer.devtools.produce.synthetic_events, the backlog's mix:
every field of the current schema, a quarter of the cache reads under the seed's name
`cache_input_tokens`) with `decode_fast` (msgspec, what the worker runs) and with `decode` (the
pydantic model), and prints one JSON object: the share of events the fast path decoded itself,
and CPU µs per event of each decoder (best of three passes).
"""

from __future__ import annotations

import argparse
import json
import time

from consumer.devtools.produce import synthetic_events
from consumer.pipeline.validate import FastUsageEvent, decode, decode_fast


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.decode")
    p.add_argument("--events", type=int, default=100_000)
    a = p.parse_args()
    values = [json.dumps(e).encode() for e in synthetic_events(a.events, seed=7)]
    fast = sum(isinstance(decode_fast(v, 65_536), FastUsageEvent) for v in values)
    timings = {}
    for name, decoder in (("fast", decode_fast), ("model", decode)):
        best = float("inf")
        for _ in range(3):
            began = time.process_time()
            for value in values:
                decoder(value, 65_536)
            best = min(best, time.process_time() - began)
        timings[name] = best / len(values) * 1e6
    print(
        json.dumps(
            {
                "events": len(values),
                "fast_path_share": fast / len(values),
                "fast_us_per_event": round(timings["fast"], 3),
                "model_us_per_event": round(timings["model"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()

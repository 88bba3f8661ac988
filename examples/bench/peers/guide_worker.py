"""The reference guides' consumer loop with redis-py, as the benchmark's peer:
XREADGROUP COUNT 10 BLOCK 500, then one XACK per entry, no-op handler. Runs
until SIGTERM.

    python guide_worker.py REDIS_URL STREAM GROUP CONSUMER
"""

import signal
import sys

import redis

url, stream, group, consumer = sys.argv[1:5]
r = redis.Redis.from_url(url)
stopped = False


def stop(*_):
    global stopped
    stopped = True


signal.signal(signal.SIGTERM, stop)
while not stopped:
    for _key, entries in r.xreadgroup(group, consumer, {stream: ">"}, count=10, block=500) or []:
        for entry_id, _fields in entries:
            r.xack(stream, group, entry_id)

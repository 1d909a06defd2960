"""Peer of `facesim bench votes`: the same durable write per vote done the common way, one
SQLite transaction per vote (WAL journal, synchronous=FULL so each commit is on disk before it
returns), from N concurrent writer threads, in-process (no network). Prints one JSON line.

usage: python3 bench/votes_sqlite.py <dir> <threads> <seconds>
"""
import json
import os
import sqlite3
import sys
import threading
import time

directory, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
path = os.path.join(directory, "votes.sqlite")
setup = sqlite3.connect(path)
setup.execute("PRAGMA journal_mode=WAL")
setup.execute(
    "CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY, pair_id INTEGER, annotator_id INTEGER, "
    "choice INTEGER, lease_id INTEGER UNIQUE, lease_ms INTEGER, vote_ms INTEGER)"
)
setup.execute("CREATE TABLE IF NOT EXISTS pairs (id INTEGER PRIMARY KEY, votes INTEGER)")
setup.executemany("INSERT OR IGNORE INTO pairs VALUES (?, 0)", [(i,) for i in range(1, 200_001)])
setup.commit()
setup.close()

latencies = []
lock = threading.Lock()
stop_at = time.perf_counter() + seconds
counter = iter(range(1, 10**9))


def writer(worker):
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    mine = []
    while time.perf_counter() < stop_at:
        with lock:
            n = next(counter)
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO votes (pair_id, annotator_id, choice, lease_id, lease_ms, vote_ms) VALUES (?,?,?,?,?,?)",
                   (n // 3 + 1, worker, 1 + n % 2, n, 0, 0))
        db.execute("UPDATE pairs SET votes = votes + 1 WHERE id = ?", (n // 3 + 1,))
        db.execute("COMMIT")
        mine.append((time.perf_counter() - t) * 1000)
    with lock:
        latencies.extend(mine)


started = time.perf_counter()
pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
for p in pool:
    p.start()
for p in pool:
    p.join()
elapsed = time.perf_counter() - started
latencies.sort()
q = lambda p: latencies[round((len(latencies) - 1) * p)]
print(json.dumps({"impl": f"sqlite {sqlite3.sqlite_version} WAL synchronous=FULL, one transaction per vote",
                  "annotators": threads, "seconds": elapsed, "votes": len(latencies),
                  "votes_per_s": len(latencies) / elapsed, "vote_p50_ms": q(0.5), "vote_p99_ms": q(0.99)}))

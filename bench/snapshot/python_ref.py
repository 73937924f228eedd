#!/usr/bin/env python3
"""bench/snapshot/python_ref.py - the usual backend way to snapshot a space,
as a reference for snapsync's streaming snapshot.

    python3 python_ref.py DB SPACE OUT

DB is a copy of snapsync's SQLite database (or the live file opened
read-only after the server stopped). The script does what a typical
Python/Django/Flask backend does for an "export everything" endpoint:

  1. read every live entity of SPACE (SELECT ... ORDER BY collection, id,
     fetchall),
  2. build one list of dicts, json.loads() of each body, RFC 3339 strings
     for the timestamps (the same fields snapsync writes per line),
  3. json.dumps() the whole list (one JSON document, compact separators),
  4. zlib.compress(level 6) the bytes, wrapped as a gzip file (header + raw
     deflate + CRC32/ISIZE trailer, the same container snapsync writes),
  5. write it to OUT and fsync.

Prints one JSON line: seconds per phase and in all, entity count, JSON bytes
(raw_bytes), compressed bytes, and peak RSS (getrusage ru_maxrss, KiB).
"""
import datetime
import json
import os
import resource
import sqlite3
import struct
import sys
import time
import zlib


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: python_ref.py DB SPACE OUT")
    db_path, space, out_path = sys.argv[1:]
    phases = {}
    t_all = t = time.perf_counter()

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    row = con.execute("SELECT id, version FROM spaces WHERE name = ?", (space,)).fetchone()
    if row is None:
        sys.exit(f"no space {space!r} in {db_path}")
    space_id, server_version = row
    rows = con.execute(
        "SELECT collection, id, rev, version, created_at, updated_at, body FROM entities"
        " WHERE space_id = ? AND deleted = 0 ORDER BY collection, id", (space_id,)).fetchall()
    con.close()
    phases["read_s"] = time.perf_counter() - t

    t = time.perf_counter()
    entities = [{"collection": c, "id": i, "rev": rev, "version": v, "created_at": iso(ca),
                 "updated_at": iso(ua), "deleted": False, "body": json.loads(body)}
                for (c, i, rev, v, ca, ua, body) in rows]
    del rows
    phases["build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    data = json.dumps({"space": space, "server_version": server_version, "entity_total": len(entities),
                       "entities": entities}, separators=(",", ":")).encode("utf-8")
    phases["dumps_s"] = time.perf_counter() - t

    t = time.perf_counter()
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = co.compress(data) + co.flush()
    gz = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + deflated
          + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF))
    phases["compress_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with open(out_path, "wb") as f:
        f.write(gz)
        f.flush()
        os.fsync(f.fileno())
    phases["write_s"] = time.perf_counter() - t

    total = time.perf_counter() - t_all
    print(json.dumps({"entities": len(entities), "raw_bytes": len(data), "size_bytes": len(gz),
                      "seconds": round(total, 3), **{k: round(v, 3) for k, v in phases.items()},
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "python": sys.version.split()[0]}, separators=(",", ":")))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/lib/rss_sample.py - sample a process's memory while something runs.

    python3 rss_sample.py series  PID OUT [INTERVAL_S=0.1] [MAX_S=7200]
    python3 rss_sample.py summary PID OUT [INTERVAL_S=0.05] [MAX_S=3600]

Reads /proc/PID/status every INTERVAL_S until SIGTERM, SIGINT, MAX_S or the
process's end.
  series   appends "epoch_ms rss_kib" (VmRSS) to OUT, flushed every second,
           so a reader sees all but the last second (bench/sync/run takes
           the maximum over the windows it cares about);
  summary  at the end writes one JSON line to OUT: samples, first/max/last
           VmRSS and the last VmHWM seen, in KiB (bench/snapshot/run).
"""
import json
import signal
import sys
import time

mode, pid, out = sys.argv[1], sys.argv[2], sys.argv[3]
if mode not in ("series", "summary"):
    sys.exit("rss_sample.py: the mode is series or summary")
interval = float(sys.argv[4]) if len(sys.argv) > 4 else (0.1 if mode == "series" else 0.05)
max_s = float(sys.argv[5]) if len(sys.argv) > 5 else (7200.0 if mode == "series" else 3600.0)
stop = False


def on_signal(_sig, _frm):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def read():
    """(VmRSS, VmHWM) in KiB, or (None, None) once the process is gone."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


t_end = time.monotonic() + max_s
samples = 0
first = mx = last = hwm = None
last_flush = time.monotonic()
with open(out, "a" if mode == "series" else "w") as f:
    while not stop and time.monotonic() < t_end:
        rss, h = read()
        if rss is None:
            break
        samples += 1
        if mode == "series":
            f.write(f"{int(time.time() * 1000)} {rss}\n")
            if time.monotonic() - last_flush >= 1.0:
                f.flush()
                last_flush = time.monotonic()
        if first is None:
            first = rss
        mx = rss if mx is None else max(mx, rss)
        last, hwm = rss, h
        time.sleep(interval)
    if mode == "summary":
        f.write(json.dumps({"samples": samples, "rss_first_kib": first, "rss_max_kib": mx,
                            "rss_last_kib": last, "hwm_kib": hwm}, separators=(",", ":")) + "\n")

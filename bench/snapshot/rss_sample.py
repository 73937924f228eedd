#!/usr/bin/env python3
"""bench/snapshot/rss_sample.py - sample a process's memory while something runs.

    python3 rss_sample.py PID OUT [INTERVAL_S=0.05] [MAX_S=3600]

Reads VmRSS (and VmHWM) from /proc/PID/status every INTERVAL_S until SIGTERM,
SIGINT, MAX_S or the process's end, then writes one JSON line to OUT:
samples, first/max/last VmRSS and the last VmHWM seen, in KiB.
"""
import json
import signal
import sys
import time

pid, out = sys.argv[1], sys.argv[2]
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
max_s = float(sys.argv[4]) if len(sys.argv) > 4 else 3600.0
stop = False


def on_signal(_sig, _frm):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def read():
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


samples = 0
first = mx = last = hwm = None
t_end = time.monotonic() + max_s
while not stop and time.monotonic() < t_end:
    rss, h = read()
    if rss is None:
        break
    samples += 1
    if first is None:
        first = rss
    mx = rss if mx is None else max(mx, rss)
    last, hwm = rss, h
    time.sleep(interval)
with open(out, "w") as f:
    f.write(json.dumps({"samples": samples, "rss_first_kib": first, "rss_max_kib": mx,
                        "rss_last_kib": last, "hwm_kib": hwm}, separators=(",", ":")) + "\n")

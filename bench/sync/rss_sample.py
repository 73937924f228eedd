#!/usr/bin/env python3
"""bench/sync/rss_sample.py - record a process's VmRSS over time.

    python3 rss_sample.py PID OUT [INTERVAL_S=0.1] [MAX_S=7200]

Every INTERVAL_S, appends "epoch_ms rss_kib" to OUT (VmRSS from
/proc/PID/status), until SIGTERM/SIGINT, MAX_S, or the process's end. The
file is flushed every second, so a reader sees all but the last second.
bench/sync/run takes the maximum over the windows it cares about.
"""
import signal
import sys
import time

pid, out = sys.argv[1], sys.argv[2]
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
max_s = float(sys.argv[4]) if len(sys.argv) > 4 else 7200.0
stop = False


def on_signal(_sig, _frm):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def rss_kib():
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


t_end = time.monotonic() + max_s
last_flush = time.monotonic()
with open(out, "a") as f:
    while not stop and time.monotonic() < t_end:
        rss = rss_kib()
        if rss is None:
            break
        f.write(f"{int(time.time() * 1000)} {rss}\n")
        if time.monotonic() - last_flush >= 1.0:
            f.flush()
            last_flush = time.monotonic()
        time.sleep(interval)

#!/usr/bin/env python3
"""expect.py CHECKER DIR STATUS [TEXT...]: runs scripts/check-layers on the
objects built under DIR and fails unless it exits with STATUS and prints
every TEXT: the checker is shown to catch what it exists to catch."""
import subprocess
import sys

checker, d, status, texts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
res = subprocess.run([sys.executable, checker, d], capture_output=True, text=True)
sys.stdout.write(res.stdout + res.stderr)
if res.returncode != status:
    sys.exit("expected exit %d, got %d" % (status, res.returncode))
for t in texts:
    if t not in res.stdout:
        sys.exit("expected %r in the output" % t)

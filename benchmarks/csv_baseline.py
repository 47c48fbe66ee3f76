"""The yardstick for replay: a straightforward csv-module loop that only sums edges."""

import csv
import sys

total_wh = 0
with open(sys.argv[1], newline="") as handle:
    for row in csv.reader(handle):
        if not row or row[0].startswith("#") or row[0] == "time":
            continue
        total_wh += 5 if row[2] == "10" else 500
print(total_wh)

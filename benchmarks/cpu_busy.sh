#!/usr/bin/env bash
# How busy the machine's cores are while something else runs (the suite, a sweep): every
# INTERVAL seconds (default 15) one line with the share of CPU time not idle since the last
# line, and the load average. docs/benchmarks.md counts these lines through a fresh-clone
# `.ci/run` to tell a CPU-bound suite from one that waits:
#   benchmarks/cpu_busy.sh > cpu.log &  (cd CLONE && bash .ci/run);  kill %1
set -euo pipefail
INTERVAL="${1:-15}"
prev=($(head -1 /proc/stat))
while sleep "$INTERVAL"; do
    cur=($(head -1 /proc/stat))
    idle=$(( (cur[4] + cur[5]) - (prev[4] + prev[5]) ))
    total=0
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + cur[i] - prev[i] )); done
    echo "$(date +%T) busy=$(( total > 0 ? 100 * (total - idle) / total : 0 ))% load=$(cut -d' ' -f1 /proc/loadavg)"
    prev=("${cur[@]}")
done

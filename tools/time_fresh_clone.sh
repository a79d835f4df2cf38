#!/usr/bin/env bash
# `CI=true make test` in a fresh clone of this repository at REV, as CI runs it; prints the
# pytest summary line and the whole command's wall time (the figures of
# benchmarks/results/test_suite_timings.txt and the README; run two revisions back to back).
#   bash tools/time_fresh_clone.sh REV [LABEL]     # log in /tmp/timing_LABEL.log
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
REV=$1; LABEL=${2:-$1}; DIR=/tmp/t_$LABEL
rm -rf "$DIR" && git clone -q "$REPO" "$DIR" && cd "$DIR" && git checkout -q "$REV"
ln -sfn "$(cd "$REPO/../shared" && pwd)" "$(dirname "$DIR")/shared"  # ../shared, as beside CI's clone
echo "start $(date -u +%H:%M:%S) UTC, rev $(git rev-parse --short HEAD)"
start=$(date +%s.%N)
CI=true make test > "/tmp/timing_$LABEL.log" 2>&1
rc=$?
echo "rc=$rc make test wall $(echo "$(date +%s.%N) - $start" | bc)"
grep -E " passed" "/tmp/timing_$LABEL.log" | tail -1

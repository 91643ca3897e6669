#!/bin/sh
# bpftune benchmark suite: ./bench/run.sh [--smoke] [--only NAME]... [--pairs N] [--json FILE]
#   [--bpftune PATH] [--load LOAD]... [--tuner TUNER]... [--secs N]
# NAME: overhead | idle | metrics | reaction | outcome | congestion | startup | drop-hooks |
# vm-reclaim (only when named: bench/vm_reclaim.py in a 1 GiB qemu guest, ~10 min).
# drop-hooks: BPF run time per program under LOAD (tcp-lo | udp-lo | udp-noport |
# udp-rcvbuf | frag-full) of a daemon with only TUNER (-a); see `bench.py --help`. Needs root and the release build
# (cargo build --release --workspace; `make bench` / `make bench-smoke` do both).
# See BENCHMARKS.md for what each figure means. Exit status is non-zero only when a
# benchmark could not run; a missed target is reported as MISS, never as a failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec python3 -u "$here/bench.py" "$@"

#!/usr/bin/env bash
# The tests that skipped (tests/common/mod.rs `skip!`: an environment feature the test
# declares is missing) and the closing total that counts them. libtest counts a skipped
# test as passed; skip! appends "binary::test: reason" to the file BPFTUNE_TEST_SKIPS
# names (`make test` sets it to target/test-skips.txt).
#
#   test-skips.sh list SKIPS        the skipped tests and why, or "skipped tests: none"
#   test-skips.sh total LOG SKIPS   from libtest's "test result:" lines in LOG, the
#                                   plain closing line
#                                   "tests: P passed, F failed, S skipped", where a test
#                                   in SKIPS is skipped, not passed (S also counts
#                                   libtest's "ignored")
set -euo pipefail

# Skip lines in FILE (0 if it is missing: nothing skipped, or no tests ran).
count() {
  [ -f "$1" ] || { echo 0; return; }
  grep -c . "$1" || true
}

case "${1:-}" in
  list)
    f=${2:?usage: $0 list SKIPS}
    n=$(count "$f")
    if [ "$n" = 0 ]; then
      echo "skipped tests: none"
    else
      echo "skipped tests ($n; counted as skipped, not passed):"
      grep . "$f" | sed 's/^/  /'
    fi ;;
  total)
    log=${2:?usage: $0 total LOG SKIPS}
    f=${3:?usage: $0 total LOG SKIPS}
    awk -v k="$(count "$f")" '
      /^test result:/ { p += $4; f += $6; s += $8 }
      END { printf "tests: %d passed, %d failed, %d skipped\n", p - k, f, s + k }' "$log" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac

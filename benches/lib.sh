# Shared by the benchmark scripts that start their own gateways (sourced, not run):
# the binary, a work folder removed on exit, free ports, and starting a gateway until ready.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tg=${TOKENGATE:-$root/target/release/tokengate}
if [ ! -x "$tg" ]; then
  (cd "$root" && cargo build --release --locked)
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_gateway NAME ADMIN_PORT [BINARY]: serves $work/NAME/gateway.toml in the background (with
# BINARY, default $tg), waits for /readyz on the admin port, and exits the script with its log
# when it does not become ready in 10 s.
start_gateway() {
  local name=$1 admin=$2 bin=${3:-$tg}
  "$bin" serve --config "$work/$name/gateway.toml" >"$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): $name did not become ready; its log:" >&2
  cat "$work/$name/log" >&2
  exit 1
}

# bench_rps ARGS...: one `tokengate bench` run (1 thread, JSON); prints "req/s non-2xx+errors".
bench_rps() {
  "$tg" bench --threads 1 --json "$@" | python3 -c 'import json,sys
j = json.load(sys.stdin)
bad = sum(n for s, n in j["status"].items() if s != "200") + sum(j["errors"].values())
print("%.0f %d" % (j["rps"], bad))'
}

# median_table "A label" "B label" NAME...: one row per NAME from results[NAME.a] and
# results[NAME.b] (space-separated req/s of the rounds): medians, ranges and the B/A ratio.
median_table() {
  local a=$1 b=$2
  shift 2
  printf '%-10s %-24s %-24s %s\n' target "$a req/s (runs)" "$b req/s (runs)" "$b/$a (median)"
  for t in "$@"; do
    [ -z "${results[$t.a]:-}" ] && continue
    python3 - "$t" "${results[$t.a]}" "${results[$t.b]}" <<'PY'
import statistics, sys
t, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
fmt = lambda v: f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
print(f"{t:<10} {fmt(a):<24} {fmt(b):<24} {statistics.median(b) / statistics.median(a):.2f}x")
PY
  done
}

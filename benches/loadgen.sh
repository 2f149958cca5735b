#!/usr/bin/env bash
# loadgen.sh: `tokengate bench` as a load generator beside wrk: the same target (nginx, one worker,
# answering 200 "ok"), the same shape (1 thread, CONNS connections, keep-alive), each generator
# pinned to CPU 1 and nginx to CPU 0, rounds interleaved (wrk first in odd rounds, tokengate
# first in even ones, so that a drift of the machine hurts both alike).
#
#   benches/loadgen.sh [-s SECS] [-r ROUNDS] [-c CONNS] [-i]
#
#   -s  seconds per run (default 5)     -r  rounds (default 3)     -c  connections (default 64)
#   -i  instructions per request instead of req/s, counted by valgrind's callgrind (user space
#       only; repeatable on a busy machine): each generator runs -s and 3x -s seconds, and the
#       difference of the counts over the difference of the requests is what a request costs
#
# Prints every round's req/s and the ratio tokengate/wrk, then the medians. TOKENGATE=path
# measures another build (default target/release/tokengate); PORT (default 19900) must be free.
# Needs nginx, wrk, taskset (util-linux); -i needs valgrind.
set -euo pipefail
secs=5 rounds=3 conns=64 instr=0
while getopts s:r:c:ih o; do
  case $o in s) secs=$OPTARG ;; r) rounds=$OPTARG ;; c) conns=$OPTARG ;; i) instr=1 ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;; esac
done
need=(nginx wrk taskset)
[ "$instr" = 1 ] && need+=(valgrind callgrind_annotate)
for t in "${need[@]}"; do
  command -v "$t" >/dev/null || { echo "loadgen.sh: needs $t (apt-get install -y nginx wrk util-linux valgrind)" >&2; exit 2; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
tg=${TOKENGATE:-$root/target/release/tokengate}
[ -x "$tg" ] || (cd "$root" && cargo build --release --bin tokengate >&2)
port=${PORT:-19900}
url=http://127.0.0.1:$port/
dir=$(mktemp -d /tmp/tokengate-loadgen.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

mkdir -p "$dir/tmp"
cat >"$dir/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
}
NGX
taskset -c 0 nginx -c "$dir/nginx.conf" -p "$dir" -e "$dir/nginx-error.log" &
pids+=($!)
for _ in $(seq 50); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$url" >/dev/null || { echo "loadgen.sh: nginx did not start:" >&2; cat "$dir/nginx-error.log" >&2; exit 1; }

# wrk_run: req/s of one wrk run.
wrk_run() { taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" "$url" | awk '/^Requests\/sec:/ { print $2 }'; }
# tg_run: req/s of one tokengate bench run (no warm-up: wrk has none either).
tg_run() {
  taskset -c 1 "$tg" bench --url "$url" --no-token -c "$conns" -d "$secs" --warmup 0 --json |
    python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["rps"])'
}

if [ "$instr" = 1 ]; then
  # count NAME CMD...: the instructions of a whole run. Start-up and valgrind's first translation
  # of every code path cost as much as thousands of requests, so each generator runs twice, -s
  # and 3x -s seconds: the difference of the counts over the difference of the requests is the
  # steady per-request cost.
  count() {
    local name=$1
    shift
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$dir/$name.cg" "$@" >"$dir/$name.out" 2>"$dir/$name.err"
    callgrind_annotate "$dir/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
  }
  wrk_req() { awk '/requests in/ { print $1 }' "$dir/$1.out"; }
  tg_req() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$dir/$1.out"; }
  long=$((secs * 3))
  w1=$(count w1 wrk -t1 -c"$conns" -d"${secs}s" "$url") r1=$(wrk_req w1)
  w2=$(count w2 wrk -t1 -c"$conns" -d"${long}s" "$url") r2=$(wrk_req w2)
  t1=$(count t1 "$tg" bench --url "$url" --no-token -c "$conns" -d "$secs" --warmup 0 --json) q1=$(tg_req t1)
  t2=$(count t2 "$tg" bench --url "$url" --no-token -c "$conns" -d "$long" --warmup 0 --json) q2=$(tg_req t2)
  python3 - "$w1" "$r1" "$w2" "$r2" "$t1" "$q1" "$t2" "$q2" <<'PY'
import sys
w1, r1, w2, r2, t1, q1, t2, q2 = (float(x) for x in sys.argv[1:])
for name, i1, n1, i2, n2 in (("wrk", w1, r1, w2, r2), ("tokengate bench", t1, q1, t2, q2)):
    print(f"{name:<16} {(i2 - i1) / (n2 - n1):8.0f} instructions/request "
          f"({i1:.0f} for {n1:.0f} requests, {i2:.0f} for {n2:.0f})")
PY
  exit 0
fi

printf '%-6s %12s %12s %8s\n' round wrk tokengate ratio
w_all=() t_all=()
for r in $(seq "$rounds"); do
  if [ $((r % 2)) = 1 ]; then w=$(wrk_run); t=$(tg_run); else t=$(tg_run); w=$(wrk_run); fi
  w_all+=("$w") t_all+=("$t")
  printf '%-6s %12s %12s %8s\n' "$r" "$w" "$t" "$(python3 -c "print('%.3f' % ($t / $w))")"
done
python3 - "${w_all[*]}" "${t_all[*]}" <<'PY'
import statistics, sys
w, t = [float(x) for x in sys.argv[1].split()], [float(x) for x in sys.argv[2].split()]
ratios = [b / a for a, b in zip(w, t)]
print(f"median {statistics.median(w):12.0f} {statistics.median(t):12.0f} {statistics.median(ratios):8.3f}"
      f"  (ratios {min(ratios):.3f}-{max(ratios):.3f})")
PY

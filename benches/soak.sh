#!/usr/bin/env bash
# soak.sh: memory and file-descriptor behaviour of tokengate under sustained load, squeezed into a
# bounded run on loopback. Prints RSS and open fds of the gateway at each step, and fails (exit 1)
# when either grows between the second and the last load round by more than the allowed slack (the
# first round fills the verified-token cache and the allocator's pools).
#
#   benches/soak.sh [-r ROUNDS] [-s SECS] [-c CONNS] [-i IDLE_CONNS]
#
#   -r  load rounds (default 6)    -s  seconds per round (default 10)
#   -c  busy connections (default 1000, new tokens each request: 2000 distinct)
#   -i  idle keep-alive connections held open at the end (default 10000)
#
# Steps: start an upstream (tokengate's own echo route is used, so nothing else is needed), start
# tokengate (release, plain listener, 1 worker), measure idle RSS; run ROUNDS rounds of
# `tokengate bench` and sample RSS/fds after each; then open IDLE_CONNS keep-alive connections that
# each made one request, and sample again. Needs python3 (for the idle connections) and a
# release build (built if missing). Everything stays on 127.0.0.1.
set -euo pipefail
rounds=6 secs=10 conns=1000 idle=10000
while getopts r:s:c:i:h o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; c) conns=$OPTARG ;; i) idle=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;; esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
tg=${TOKENGATE:-$root/target/release/tokengate}
[ -x "$tg" ] || (cd "$root" && cargo build --release --quiet)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
dir=$(mktemp -d /tmp/tokengate-soak.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port=${PORT:-19500}
cat > "$dir/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$((port + 1))"
listen_plain = "127.0.0.1:$port"
workers = 1
max_connections = 30000
max_connections_per_ip = 0
header_read_timeout_secs = 120   # keep the idle connections open while they are counted
[admin]
listen = "127.0.0.1:$((port + 2))"
[tokens]
active_kid = "k1"
[state]
path = ":memory:"
[log]
level = "warn"
[[routes]]
prefix = "/"
upstream = "echo"
EOF
"$tg" check --config "$dir/gateway.toml" >/dev/null
"$tg" serve --config "$dir/gateway.toml" 2>"$dir/gw.log" &
pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$((port + 2))/readyz" >/dev/null && break; sleep 0.1; done
sample() { # label
  local rss fds
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  printf '%-28s rss %7.1f MiB   fds %6d\n' "$1" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$fds"
  echo "$1 $rss $fds" >> "$dir/samples"
}
sleep 1
sample "idle after start"
for r in $(seq "$rounds"); do
  "$tg" bench --url "http://127.0.0.1:$port/soak" --mint-key "$dir/keys/k1.pem" --distinct 2000 \
    -c "$conns" -d "$secs" --warmup 0 --json > "$dir/round.json"
  python3 -c "import json,sys; d=json.load(open('$dir/round.json')); print(f\"  round $r: {d['rps']:.0f} req/s, p99 {d['latency_us']['p99']/1000:.1f} ms, status {d['status']}, errors {d['errors']}\")"
  sleep 1
  sample "after round $r"
done
python3 - "$port" "$idle" "$dir/holding" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /public HTTP/1.1\r\nHost: soak\r\n\r\n")
    socks.append(s)
for s in socks:
    s.recv(4096)
print(f"  holding {len(socks)} idle keep-alive connections", flush=True)
open(sys.argv[3], "w").close()
time.sleep(5)
PY
holder=$!
for _ in $(seq 300); do [ -e "$dir/holding" ] && break; sleep 0.1; done
sample "with $idle idle connections"
wait "$holder" || true
sleep 1
sample "after they closed"
python3 - "$dir/samples" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
rounds = [r for r in rows if r[:2] == ["after", "round"]]
# RSS swings by a few MiB between rounds (allocator pools): a leak is the quietest of the last two
# rounds above the loudest of the early ones; fds must not grow at all.
early, late = rounds[1:3] or rounds[:1], rounds[-2:]
rss_growth = (min(int(r[-2]) for r in late) - max(int(r[-2]) for r in early)) / 1024
fd_growth = int(late[-1][-1]) - int(early[0][-1])
print(f"growth from the early rounds to the last two: rss {rss_growth:+.1f} MiB, fds {fd_growth:+d}")
bad = rss_growth > 8 or fd_growth > 16
print("soak:", "FAILED (growth)" if bad else "ok")
sys.exit(1 if bad else 0)
PY

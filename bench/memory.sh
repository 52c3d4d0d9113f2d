#!/usr/bin/env bash
# Memory of one node holding 100,000 small keys, against redis-server
# loaded the same way (docs/memory.md).
#
#   bench/memory.sh [SYSTEM...]      SYSTEM: lsm, memory, btree, redis (default: lsm memory redis)
#
# Environment:
#   NODE_BIN     the ringkv-node binary (default target/release/ringkv-node)
#   KEYS         keys written, and the key space of -r (default 100000)
#   REQUESTS     SET requests sent (default 100000)
#   VALUE        value bytes (default 100)
#   MIX          then this many SETs (overwrites) and this many GETs over the same keys, 0: none (default 300000)
#   CLIENTS      redis-benchmark connections (default 50)
#   NODE_ENV     extra environment for the node, e.g. "MALLOC_ARENA_MAX=2"
#   NODE_ARGS    extra flags for the node
#   KEEP         non-empty: keep the work directory
#   SMAPS        non-empty: print the node's mappings grouped (heap, stacks, ...)
#   TRIM         non-empty: then call malloc_trim(0) in the server through gdb
#                and report again (what the allocator held freed)
#
# For each system it starts a fresh server on loopback (ringkv-node with
# plaintext peers and no client auth; redis-server without persistence),
# waits for it, then runs
#   load: redis-benchmark -p PORT -t set     -n REQUESTS -r KEYS -d VALUE -c CLIENTS
#   mix:  redis-benchmark -p PORT -t set,get -n MIX      -r KEYS -d VALUE -c CLIENTS
# and 2 s after each reads /proc/PID/status (VmRSS, VmHWM, Threads). The
# server is stopped at the end, and on exit.
set -uo pipefail

cd "$(dirname "$0")/.."
NODE_BIN=${NODE_BIN:-target/release/ringkv-node}
KEYS=${KEYS:-100000}
REQUESTS=${REQUESTS:-100000}
VALUE=${VALUE:-100}
MIX=${MIX:-300000}
CLIENTS=${CLIENTS:-50}
NODE_ENV=${NODE_ENV:-}
NODE_ARGS=${NODE_ARGS:-}
systems=("$@")
[ ${#systems[@]} -eq 0 ] && systems=(lsm memory redis)

work=$(mktemp -d /tmp/ringkv-memory.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
head -c 48 /dev/urandom | base64 >"$work/secret"

field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# Sums the Rss of a process's mappings by kind, from /proc/PID/smaps:
# glibc's main heap ([heap]), glibc's per-thread arenas (anonymous, starting
# on a 64 MiB boundary, the rest of the 64 MiB reserved PROT_NONE), thread
# stacks (anonymous, right above a 4 KiB PROT_NONE guard page), other
# anonymous mappings (mallocs of 128 KiB and more, jemalloc's extents), the
# binary's own pages, and other files.
smaps() {
    python3 - "/proc/$1/smaps" <<'PY'
import sys
maps = []
for line in open(sys.argv[1]):
    f = line.split()
    if '-' in f[0] and len(f) >= 5 and ':' in f[3]:
        lo, hi = (int(x, 16) for x in f[0].split('-'))
        maps.append(dict(lo=lo, hi=hi, perm=f[1], name=f[5] if len(f) > 5 else '', rss=0))
    elif f[0] == 'Rss:':
        maps[-1]['rss'] = int(f[1])
out, n = {}, {}
for i, m in enumerate(maps):
    prev = maps[i - 1] if i else None
    if m['name'] == '[heap]':
        k = 'heap (main arena, brk)'
    elif m['name'].startswith('[stack'):
        k = 'main thread stack'
    elif m['name'].startswith('/'):
        k = 'binary' if ('ringkv' in m['name'] or 'redis' in m['name']) else 'shared libraries, files'
    elif m['name']:
        k = 'vdso, vvar'
    elif m['perm'].startswith('---'):
        k = 'reserved, no access'
    elif m['lo'] % (64 << 20) == 0:
        k = 'glibc thread arenas'
    elif prev and prev['perm'].startswith('---') and prev['hi'] == m['lo'] and prev['hi'] - prev['lo'] == 4096:
        k = 'thread stacks'
    else:
        k = 'other anonymous (large mallocs)'
    out[k] = out.get(k, 0) + m['rss']
    n[k] = n.get(k, 0) + 1
for k in sorted(out, key=lambda k: -out[k]):
    if out[k]:
        print(f"  {k:34} {out[k] / 1024:8.1f} MiB  ({n[k]} mappings)")
print(f"  {'total':34} {sum(out.values()) / 1024:8.1f} MiB")
PY
}

run() {
    local sys=$1 port
    case $sys in
    redis)
        port=16599
        redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$work" >"$work/redis.log" 2>&1 &
        pid=$!
        ;;
    lsm | memory | btree)
        port=16590
        local dirs=()
        [ "$sys" != memory ] && dirs=(--data-dir "$work/$sys")
        # shellcheck disable=SC2086
        env $NODE_ENV "$NODE_BIN" --id 1 --listen 127.0.0.1:17501 --client-listen 127.0.0.1:17601 \
            --redis-listen 127.0.0.1:$port --secret-file "$work/secret" \
            --insecure-plaintext-peers --no-client-auth --engine "$sys" "${dirs[@]}" $NODE_ARGS \
            >"$work/$sys.out" 2>"$work/$sys.log" &
        pid=$!
        ;;
    *)
        echo "unknown system $sys" >&2
        exit 2
        ;;
    esac
    for _ in $(seq 100); do
        redis-cli -p $port ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    report() {
        echo "$sys $1: RSS $(mib "$(field VmRSS $pid)") MiB, peak (VmHWM) $(mib "$(field VmHWM $pid)") MiB," \
            "threads $(field Threads $pid)"
    }
    report idle
    bench() {
        redis-benchmark -p $port "$@" -r "$KEYS" -d "$VALUE" -c "$CLIENTS" -q \
            | tr '\r' '\n' | grep 'requests per second' | sed "s/^ */  $sys /"
    }
    bench -t set -n "$REQUESTS"
    sleep 2
    report load
    if [ "$MIX" -gt 0 ]; then
        bench -t set,get -n "$MIX"
        sleep 2
        report mix
    fi
    [ -n "${SMAPS:-}" ] && smaps $pid
    if [ -n "${TRIM:-}" ]; then
        # What glibc holds freed but not returned: malloc_trim(0) hands
        # every free page of every arena back to the kernel.
        gdb -p $pid -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1
        report "after malloc_trim(0)"
        [ -n "${SMAPS:-}" ] && smaps $pid
    fi
    kill $pid
    wait $pid 2>/dev/null || true
    pid=
}

for s in "${systems[@]}"; do run "$s"; done

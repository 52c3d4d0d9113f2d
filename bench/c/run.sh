#!/usr/bin/env bash
# Builds bench/c/put_get.c against the C ABI (release), starts three
# ringkv-node processes on loopback (N=3, TLS between them, no client
# authentication), runs put_get against them, and stops them.
#
#   bench/c/run.sh [OPS] [KEYS] [BUCKET]
#
# Everything it makes is in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p ringkv-ffi --lib
cargo build --release -q -p ringkv --bin ringkv-node
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -Wall -Wextra -Werror -I ffi/include bench/c/put_get.c \
  target/release/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o "$work/put_get"
node=target/release/ringkv-node
head -c 32 /dev/urandom | base64 > "$work/secret"
"$node" certs --dir "$work/certs" --cluster ringkv-c-bench 1 2 3 > /dev/null
seed=""
clients=()
for id in 1 2 3; do
  args=(--id "$id" --listen 127.0.0.1:0 --client-listen 127.0.0.1:0
    --data-dir "$work/n$id" --cluster ringkv-c-bench --secret-file "$work/secret"
    --peer-ca "$work/certs/ca.pem" --peer-cert "$work/certs/node-$id.pem"
    --peer-key "$work/certs/node-$id.key" --no-client-auth)
  if [ -n "$seed" ]; then args+=(--seed "$seed"); fi
  "$node" "${args[@]}" > "$work/n$id.out" 2> "$work/n$id.log" &
  pids+=($!)
  for _ in $(seq 300); do
    if grep -q '^ready ' "$work/n$id.out"; then break; fi
    sleep 0.1
  done
  line=$(grep '^ready ' "$work/n$id.out") || { echo "node $id never became ready" >&2; tail "$work/n$id.log" >&2; exit 1; }
  peer=$(sed -n 's/.* peer=\([^ ]*\).*/\1/p' <<< "$line")
  client=$(sed -n 's/.* client=\([^ ]*\).*/\1/p' <<< "$line")
  clients+=("$client")
  if [ -z "$seed" ]; then seed="1@$peer"; fi
done
# Let the ring settle: every node in it, every transfer done.
sleep 3
addrs=$(IFS=,; echo "${clients[*]}")
"$work/put_get" "$addrs" "$@"

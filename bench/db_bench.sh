#!/usr/bin/env bash
# RocksDB's db_bench on the workload of docs/benchmarks.md ("Workloads and
# peers"), the same one `storage` (src/bin/storage.rs) runs against ringkv,
# fjall and redb:
# 16-byte keys, 100-byte values that compress to about half, lz4, a bloom
# filter of 10 bits per key, seeks reading 10 entries, one thread, WAL on,
# no fsync per write (db_bench's default --sync=0).
#
# Usage: bench/db_bench.sh [NUM] [DIR]
#   NUM  keys (default 1000000), as `storage --num`
#   DIR  where the database goes (default: a fresh temp dir, removed after)
#
# Installs Debian's rocksdb-tools (which ships db_bench) when db_bench is
# missing; that needs root. Prints db_bench's own report, then one line of
# ops/s per phase.
set -euo pipefail

num="${1:-1000000}"
if ! [[ "$num" =~ ^[0-9]+$ ]] || [ "$num" -lt 1 ]; then
    echo "db_bench.sh: NUM must be a positive integer, got '$num'" >&2
    exit 2
fi

if ! command -v db_bench >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "db_bench.sh: db_bench is missing and installing rocksdb-tools needs root" >&2
        exit 1
    fi
    echo "db_bench.sh: installing rocksdb-tools for db_bench" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rocksdb-tools >/dev/null
fi

if [ -n "${2:-}" ]; then
    dir="$2"
    mkdir -p "$dir"
    cleanup() { :; }
else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/ringkv-db-bench-XXXXXX")"
    cleanup() { rm -rf "$dir"; }
fi
trap cleanup EXIT

out="$(mktemp "${TMPDIR:-/tmp}/ringkv-db-bench-out-XXXXXX")"
trap 'cleanup; rm -f "$out"' EXIT

# fillseq and fillrandom start from an empty database (db_bench destroys it
# for every fill*), the rest use what is there. waitforcompaction between
# overwrite and the reads matches `storage`, which lets compaction settle
# before it reads. Unlike `storage`, db_bench's fillrandom and overwrite
# draw keys with replacement, so about 1 - 1/e of the keys exist and its
# readrandom reports how many it found.
db_bench \
    --db="$dir/rocksdb" \
    --benchmarks=fillseq,fillrandom,overwrite,waitforcompaction,readrandom,readmissing,seekrandom,readseq \
    --num="$num" \
    --key_size=16 \
    --value_size=100 \
    --compression_type=lz4 \
    --compression_ratio=0.5 \
    --bloom_bits=10 \
    --seek_nexts=10 \
    --threads=1 \
    --histogram=0 \
    | tee "$out"

# The fsync'd phase: 10,000 random puts into a fresh database, each synced
# before it returns (reported as fillsync).
db_bench \
    --db="$dir/rocksdb-sync" \
    --benchmarks=fillrandom \
    --sync=1 \
    --num=10000 \
    --key_size=16 \
    --value_size=100 \
    --compression_type=lz4 \
    --compression_ratio=0.5 \
    --threads=1 \
    | sed 's/^fillrandom /fillsync   /' | tee -a "$out"

echo
echo "RocksDB db_bench, $num keys: ops/s per phase"
# db_bench's lines look like:
#   fillseq      :       2.345 micros/op 426439 ops/sec;   47.2 MB/s
awk '/micros\/op/ && / ops\/sec/ {
    name = $1; sub(/:$/, "", name);
    for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^ops\/sec/) { printf "%-12s %12s\n", name, $i }
}' "$out"

#!/usr/bin/env bash
# Seeds each fuzz target's corpus with valid messages from the golden test data.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/envelope corpus/frame_stream corpus/announcement corpus/rotation_certificate corpus/persisted corpus/sealed
cp ../schema/testdata/delta_envelope_v1.frame corpus/envelope/golden
printf '\x40' | cat - ../schema/testdata/delta_envelope_v1.frame > corpus/frame_stream/golden
cp ../schema/testdata/announcement_v1.bin corpus/announcement/golden

# zstd_payload: a 2-byte declared length (little-endian) then one zstd frame of that many bytes.
mkdir -p corpus/zstd_payload
head -c 1000 ../docs/protocol.md > /tmp/vain-zstd-seed.txt
{ printf '\xe8\x03'; zstd -q -c /tmp/vain-zstd-seed.txt; } > corpus/zstd_payload/seed
rm -f /tmp/vain-zstd-seed.txt

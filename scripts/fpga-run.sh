#!/usr/bin/env bash
# A model on the FPGA blocks of papa-edge/fpga: exported by `papa export --format fpga`
# (int8 memory files, model.vh, the int8 runtime's golden vectors), simulated by Icarus
# Verilog (tb_network: every layer's output compared bit for bit with the golden vectors,
# the run fails on any difference), synthesised by yosys (resource estimate), then a short
# table.
#
#   scripts/fpga-run.sh PAPA MODEL.safetensors WORKDIR [SAMPLES]
#
# PAPA is the papa binary; SAMPLES test images are exported and simulated (default 10).
# Needs iverilog (vvp) and yosys.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,11p' "$0"; exit 2; }
papa=$(realpath "$1") model=$(realpath "$2") work=$3 samples=${4:-10}
rtl=$(realpath "$(dirname "$0")/../papa-edge/fpga")
mkdir -p "$work" && work=$(realpath "$work")
name=$(basename "$(dirname "$model")")
export_dir="$work/export"

"$papa" export "$model" --format fpga --out "$export_dir" --golden-samples "$samples"

# The memory files' and headers' paths are relative: both tools run in the export.
cd "$export_dir"
iverilog -g2012 -Wall -Wno-timescale -I . -I golden -o "$work/tb.vvp" "$rtl"/rtl/*.v "$rtl/tb/tb_network.v"
# The samples split between two simulators (iverilog runs one thread; CI has two cores).
start=$SECONDS
half=$(( (samples + 1) / 2 ))
vvp -n "$work/tb.vvp" +first=0 +samples="$half" > "$work/sim0.txt" &
pid=$!
if (( samples > half )); then
    vvp -n "$work/tb.vvp" +first="$half" +samples=$((samples - half)) > "$work/sim1.txt"
else
    : > "$work/sim1.txt"
fi
wait "$pid" || true
sim_s=$((SECONDS - start))
cat "$work/sim0.txt" "$work/sim1.txt"
passes=$(cat "$work/sim0.txt" "$work/sim1.txt" | grep -c '^tb_network: PASS' || true)
(( passes == (samples > half ? 2 : 1) )) || { echo "FAIL: the testbench did not pass" >&2; exit 1; }
cycles=$(sed -n 's/.* \([0-9]*\) on average$/\1/p' "$work/sim0.txt")

# Coarse cells (multipliers and memories as yosys infers them), then the logic mapped to
# gates with the memories left as memories (a generic flow has no block RAM to map them to,
# and flattening a ROM of weights into gates says nothing about an FPGA).
start=$SECONDS
yosys -q -l "$work/yosys.log" -p "read_verilog -I . $rtl/rtl/papa_requant.v $rtl/rtl/papa_conv.v $rtl/rtl/papa_dense.v $rtl/rtl/papa_network.v; synth -top papa_network -flatten -run begin:fine; tee -o $work/coarse.txt stat -width; opt -fast -full; techmap; opt -fast; abc -fast; opt_clean; tee -o $work/gates.txt stat"
syn_s=$((SECONDS - start))
stat_of() { sed -n "s/^ *Number of $2: *\([0-9]*\)$/\1/p" "$1" | tail -1; }
cell_count() { awk -v c="$2" '$1 == c { print $2 }' "$1" | tail -1; }
maccs=$(cell_count "$work/coarse.txt" '$macc')
mems=$(cell_count "$work/coarse.txt" '$mem_v2')
cells=$(stat_of "$work/gates.txt" cells)
dffs=$(grep -E '^\s+\$_S?DFF' "$work/gates.txt" | awk '{ s += $2 } END { print s + 0 }')
# The memories yosys kept, in bits, from the header's depths (8-bit arena, weights and
# table; 32 + 32 + 8 bits per output channel).
param() { sed -n "s/^localparam integer $1 = \([0-9]*\);.*/\1/p" model.vh; }
mem_bits=$(( 8 * ($(param ARENA_LEN) + $(param WEIGHTS_LEN) + $(param TABLE_LEN)) + 72 * $(param CHANNELS_LEN) ))
echo
echo "| model | samples bit-exact | cycles / inference | yosys cells (gates + memories) | flip-flops | multiply-accumulate cells (\$macc) | memories | memory bits | simulation | synthesis |"
echo "|---|---|---|---|---|---|---|---|---|---|"
echo "| $name | $samples | $cycles | $cells | $dffs | $maccs | $mems | $mem_bits | ${sim_s} s | ${syn_s} s |"

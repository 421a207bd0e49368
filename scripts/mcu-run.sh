#!/usr/bin/env bash
# A model on a Cortex-M4F: its int8 and f32 flash images run by the firmware of
# examples/mcu-firmware under QEMU (mps2-an386) on the first test samples, the correct
# count and the logits (a digest of their bits) compared with the host runtime's on the
# same samples (the run fails on a difference), then a table of flash, RAM and
# instructions per inference, and whether the code-size build (one sample) fits an
# STM32F446RE, 512 KB of flash and 128 KB of RAM (linked for it; the int8 firmware must fit).
#
#   scripts/mcu-run.sh PAPA FLASH_COMPARE MODEL.safetensors WORKDIR [SAMPLES]
#
# PAPA is the papa binary, FLASH_COMPARE papa-edge's flash_compare example (which also
# checks the f32 image against papa's forward on the whole test split, and int8 against
# f32). Needs qemu-system-arm and the thumbv7em-none-eabihf target.
set -euo pipefail
[[ $# -ge 4 ]] || { sed -n '2,11p' "$0"; exit 2; }
papa=$(realpath "$1") compare=$(realpath "$2") model=$(realpath "$3") work=$4 samples=${5:-300}
root=$(realpath "$(dirname "$0")/..")
mkdir -p "$work" && work=$(realpath "$work")
name=$(basename "$(dirname "$model")")

"$papa" export "$model" --format flash --out "$work/int8.papa" --report-samples 1000
"$papa" export "$model" --format flash --precision f32 --out "$work/f32.papa" --report-samples 0
"$compare" "$model" "$work/int8.papa" "$work/f32.papa" --dump "$work" --samples "$samples"

# The code-size build embeds one sample and links for an STM32F446RE (512 KB flash, 128 KB
# RAM): the link fails if the firmware does not fit that part.
sample_len=$(( $(stat -c %s "$work/samples.u8") / $(stat -c %s "$work/labels.u8") ))
head -c "$sample_len" "$work/samples.u8" > "$work/one-sample.u8"
head -c 1 "$work/labels.u8" > "$work/one-label.u8"

firmware() { # precision variant samples labels memory cargo-args... : builds, prints the ELF
    local precision=$1 target="$root/target/mcu-$1-$2"
    local samples=$3 labels=$4 memory=$5; shift 5
    (cd "$root/examples/mcu-firmware" && PAPA_MODEL="$work/$precision.papa" \
        PAPA_SAMPLES="$samples" PAPA_LABELS="$labels" PAPA_MEMORY="$memory" \
        CARGO_TARGET_DIR="$target" cargo build --release --quiet "$@") >&2 || return 1
    echo "$target/thumbv7em-none-eabihf/release/papa-mcu-firmware"
}
section() { # elf name : the section's size in bytes (0 when absent)
    local hex
    hex=$(readelf -S -W "$1" | sed 's/^ *\[ *[0-9]*\] *//' | awk -v s="$2" '$1 == s { print $5 }')
    echo $((16#${hex:-0}))
}
qemu() {
    timeout 600 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -icount shift=0 \
        -semihosting-config enable=on,target=native -kernel "$1"
}

rows=()
for precision in int8 f32; do
    features=()
    [[ $precision == f32 ]] && features=(--features f32)
    elf=$(firmware "$precision" report "$work/samples.u8" "$work/labels.u8" memory-mps2-an386.x "${features[@]}")
    out=$(qemu "$elf")
    echo "$out" | sed "s/^/  [$precision] /"
    got=$(echo "$out" | sed -n 's/^papa-mcu: correct //p')
    want=$(sed -n "s/^$precision correct //p" "$work/host.txt")
    if [[ -z "$got" || "$got" != "$want" ]]; then
        echo "FAIL: the $precision firmware got ${got:-nothing} correct, the host runtime $want" >&2
        exit 1
    fi
    got_digest=$(echo "$out" | sed -n 's/^papa-mcu: logits //p')
    want_digest=$(sed -n "s/^$precision logits //p" "$work/host.txt")
    if [[ -z "$got_digest" || "$got_digest" != "$want_digest" ]]; then
        echo "FAIL: the $precision firmware's logits (digest ${got_digest:-none}) are not the host runtime's ($want_digest)" >&2
        exit 1
    fi
    echo "OK: the $precision firmware under QEMU gets $got correct and the host runtime's logits bit for bit (digest $got_digest)"
    # The runtime's own code: the firmware without its report (no formatting), one inference,
    # linked for the STM32F446RE; where it does not fit (the link fails), for QEMU's machine.
    part=STM32F446RE
    if ! small=$(firmware "$precision" small "$work/one-sample.u8" "$work/one-label.u8" \
        memory-stm32f446.x --no-default-features "${features[@]}" 2>"$work/link.txt"); then
        grep -q "overflowed" "$work/link.txt" || { cat "$work/link.txt" >&2; exit 1; }
        part="no: over the STM32F446RE's flash"
        small=$(firmware "$precision" small "$work/one-sample.u8" "$work/one-label.u8" \
            memory-mps2-an386.x --no-default-features "${features[@]}")
    fi
    image=$(stat -c %s "$work/$precision.papa")
    code=$(( $(section "$elf" .vector_table) + $(section "$elf" .text) ))
    small_code=$(( $(section "$small" .vector_table) + $(section "$small" .text) ))
    small_flash=$(( small_code + $(section "$small" .rodata) + $(section "$small" .data) ))
    other=$(( $(section "$small" .rodata) - image - sample_len - 1 ))
    static=$(( $(section "$elf" .data) + $(section "$elf" .bss) ))
    stack=$(echo "$out" | sed -n 's/^papa-mcu: stack peak \([0-9]*\) bytes/\1/p')
    insns=$(echo "$out" | sed -n 's/^papa-mcu: instructions per inference //p')
    arena=$(echo "$out" | sed -n 's/.*arena \([0-9]*\) elements.*/\1/p')
    ram=$(( static + stack ))
    (( ram <= 131072 )) || part="no: over the STM32F446RE's RAM"
    rows+=("| $name | $precision | $small_code | $code | $other | $image | $small_flash | $static | $stack | $ram | $arena | $insns | $part |")
    echo "the $precision firmware (one sample): $small_flash bytes of flash (the STM32F446RE has 524288), RAM $ram bytes (static $static + stack peak $stack, the report build's; the part has 131072): fits: $part"
    if [[ $precision == int8 && $part != STM32F446RE ]]; then
        echo "FAIL: the int8 firmware does not fit the STM32F446RE (512 KB flash, 128 KB RAM)" >&2
        exit 1
    fi
done
echo
echo "Flash and RAM in bytes; instructions per inference counted by QEMU (-icount, SysTick)."
echo "Runtime code and flash in all: the code-size build (no report, one sample), linked for an STM32F446RE (for QEMU's machine where it does not fit)."
echo "| model | precision | runtime code | report firmware code | other rodata | image | flash in all | static RAM | stack peak (arena in it) | RAM in all | arena elements | instructions / inference | fits |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"

#!/usr/bin/env bash
# The C API as C and C++ projects consume it (issue 21): tools/install_c.sh into a temporary
# prefix, then examples/cpp/chat.cpp built by CMake through find_package(deepseek CONFIG),
# against the shared and the static library, and examples/c/generate.c through the installed
# pkg-config file. Each chat program must answer r1-nano's question right.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

DS_PROFILE=${DS_PROFILE:-dev} bash tools/install_c.sh "$tmp/prefix"
# Move the installed tree: both package files must find it from where they are.
mv "$tmp/prefix" "$tmp/moved"
prefix=$tmp/moved

answer() { # answer BINARY: r1-nano's greedy answer to one question through the C++ wrapper
	local out
	out=$(echo "What is 4738 + 256?" | "$1" models/r1-nano --temperature 0 -n 256)
	printf '%s\n' "$out"
	grep -q '^\[answer\].*4738 + 256 = 4994' <<<"$out"
}

for mode in OFF ON; do
	echo "--- CMake, DEEPSEEK_STATIC=$mode"
	cmake -S examples/cpp -B "$tmp/build-$mode" -DCMAKE_PREFIX_PATH="$prefix" \
		-DDEEPSEEK_STATIC=$mode -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$tmp/build-$mode" >/dev/null
	if [ "$mode" = ON ]; then
		! ldd "$tmp/build-$mode/chat" | grep -q libdeepseek || { echo "static chat links libdeepseek.so" >&2; exit 1; }
	else
		ldd "$tmp/build-$mode/chat" | grep -q "libdeepseek.so => $prefix/lib/" ||
			{ echo "shared chat does not find the installed libdeepseek.so" >&2; exit 1; }
	fi
	answer "$tmp/build-$mode/chat"
done

echo "--- a wrong version request fails at configure time"
mkdir -p "$tmp/v"
printf 'cmake_minimum_required(VERSION 3.16)\nproject(v NONE)\nfind_package(deepseek 0.99 CONFIG REQUIRED)\n' >"$tmp/v/CMakeLists.txt"
if cmake -S "$tmp/v" -B "$tmp/v/build" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/v.log" 2>&1; then
	echo "find_package(deepseek 0.99) accepted version $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" >&2
	exit 1
fi

echo "--- pkg-config from the installed prefix (static)"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
pkg-config --exists --print-errors "deepseek = $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
# shellcheck disable=SC2046
gcc -std=c11 -Wall -Wextra -Werror examples/c/generate.c $(pkg-config --cflags deepseek) \
	$(pkg-config --variable=static_libs deepseek) -o "$tmp/generate"
# v3_tiny's prompt and transformers' greedy continuation (as in .ci/capi.sh).
got=$("$tmp/generate" deepseek-core/tests/fixtures/v3_tiny -n 16 222 369 78 181 188 383 63 | xargs)
[ "$got" = "175 454 371 273 477 115 142 257 123 275 469 303 456 56 305 45" ] ||
	{ echo "generate (static, pkg-config) gave: $got" >&2; exit 1; }
echo "cmake: shared and static chat answer right; pkg-config static build runs"

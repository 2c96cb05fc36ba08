#!/usr/bin/env bash
# Installs deepseek-rs's C API into a prefix, for C and C++ projects:
#
#   bash tools/install_c.sh PREFIX            # release build (what users want)
#   DS_PROFILE=dev bash tools/install_c.sh P  # reuse `cargo test`'s build (CI)
#
# PREFIX/include/deepseek.h, PREFIX/lib/libdeepseek.{so,a}, PREFIX/lib/pkgconfig/deepseek.pc and
# PREFIX/lib/cmake/deepseek/ (find_package(deepseek CONFIG): targets deepseek::deepseek and
# deepseek::deepseek_static). Both the .pc file and the CMake package find the prefix from their
# own location, so the installed tree can be moved.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# = 1 ] || { echo "usage: $0 PREFIX" >&2; exit 2; }
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"
profile=${DS_PROFILE:-release}
case $profile in
release) out=release flags=(--release) ;;
dev) out=debug flags=() ;;
*) echo "DS_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac

cd "$root"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo rustc "${flags[@]}" -p deepseek-capi --lib --crate-type cdylib,staticlib \
	-- --print native-static-libs 2>&1 | tee "$log" >&2
native=$(sed -n 's/.*native-static-libs: //p' "$log" | tail -1)
[ -n "$native" ] || native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/deepseek"
install -m 644 include/deepseek.h "$prefix/include/"
install -m 755 "$target/$out/libdeepseek.so" "$prefix/lib/"
install -m 644 "$target/$out/libdeepseek.a" "$prefix/lib/"

cat >"$prefix/lib/pkgconfig/deepseek.pc" <<PC
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include
# Static linking: cc app.c \$(pkg-config --cflags deepseek) \$(pkg-config --variable=static_libs deepseek)
static_libs=\${libdir}/libdeepseek.a $native

Name: deepseek
Description: Exact DeepSeek V2/V3/R1 inference on CPUs (C API of deepseek-rs)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -ldeepseek
Libs.private: $native
PC

# CMake wants a list of library names: "-lpthread -lm" -> "pthread;m".
cmake_libs=$(sed 's/-l//g; s/ \+/;/g; s/^;//; s/;$//' <<<"$native")
for f in deepseekConfig deepseekConfigVersion; do
	sed -e "s|@NATIVE_LIBS@|$cmake_libs|g" -e "s|@VERSION@|$version|g" \
		"deepseek-capi/cmake/$f.cmake.in" >"$prefix/lib/cmake/deepseek/$f.cmake"
done
echo "installed deepseek $version ($profile) into $prefix" >&2

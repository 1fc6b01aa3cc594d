#!/usr/bin/env bash
# Installs xe: publishes src/Xapi.Cli as one native executable (Native AOT: no runtime to start,
# no JIT, so a command like `xe vm-list` runs in milliseconds) and puts it on PATH with its bash
# completion.
#   as root:   /usr/local/bin/xe                 /etc/bash_completion.d/xe
#   otherwise: ~/.local/bin/xe                   ~/.local/share/bash-completion/completions/xe
# XE_BIN_DIR and XE_COMPLETION_DIR choose other places. XE_PUBLISH=framework publishes the
# framework-dependent build instead (needs the .NET runtime at run time, starts slower); the
# script falls back to it by itself when the native toolchain is missing and cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

case "$(uname -m)" in
  x86_64) rid=linux-x64 ;;
  aarch64 | arm64) rid=linux-arm64 ;;
  *) echo "install-xe: no Native AOT target for $(uname -m); publishing framework-dependent" >&2; XE_PUBLISH=framework ;;
esac

if [ "$(id -u)" -eq 0 ]; then
  bin_dir=${XE_BIN_DIR:-/usr/local/bin}
  completion_dir=${XE_COMPLETION_DIR:-/etc/bash_completion.d}
  lib_dir=/usr/local/lib/xapi-xe
else
  bin_dir=${XE_BIN_DIR:-$HOME/.local/bin}
  completion_dir=${XE_COMPLETION_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/bash-completion/completions}
  lib_dir=${XDG_DATA_HOME:-$HOME/.local/share}/xapi-xe
fi

publish_dir=src/Xapi.Cli/bin/publish
mode=${XE_PUBLISH:-aot}
if [ "$mode" = aot ]; then
  # Native AOT links with clang (or gcc) and needs zlib's headers (Debian: clang, zlib1g-dev).
  missing=()
  command -v clang >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing+=(clang)
  [ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-xe: installing ${missing[*]} for Native AOT"
    if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
      echo "install-xe: could not install ${missing[*]}; publishing framework-dependent instead" >&2
      mode=framework
    fi
  fi
fi

rm -rf "$publish_dir"
if [ "$mode" = aot ]; then
  echo "install-xe: publishing xe (Native AOT, $rid)"
  dotnet publish src/Xapi.Cli -c Release -r "$rid" -p:PublishAot=true -o "$publish_dir/aot" -nologo -v quiet
  mkdir -p "$bin_dir"
  # Replace, not overwrite in place: a running xe keeps its old file.
  install -m 0755 "$publish_dir/aot/xe" "$bin_dir/.xe.new"
  mv -f "$bin_dir/.xe.new" "$bin_dir/xe"
else
  echo "install-xe: publishing xe (framework-dependent)"
  dotnet publish src/Xapi.Cli -c Release -o "$publish_dir/framework" -nologo -v quiet
  rm -rf "$lib_dir"
  mkdir -p "$lib_dir" "$bin_dir"
  cp -r "$publish_dir/framework/." "$lib_dir/"
  ln -sfn "$lib_dir/xe" "$bin_dir/xe"
fi

mkdir -p "$completion_dir"
install -m 0644 src/Xapi.Cli/bash-completion/xe "$completion_dir/xe"

echo "install-xe: $bin_dir/xe ($mode), completion $completion_dir/xe"
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "install-xe: $bin_dir is not on PATH; add it, e.g. export PATH=\"$bin_dir:\$PATH\"" ;;
esac
# New shells load the completion through the bash-completion package.
if [ ! -f /usr/share/bash-completion/bash_completion ]; then
  echo "install-xe: installing bash-completion"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bash-completion >/dev/null ||
    echo "install-xe: bash-completion is not installed; for completion add to ~/.bashrc: source $completion_dir/xe" >&2
fi

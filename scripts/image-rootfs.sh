#!/usr/bin/env bash
# Builds the root filesystem of strata's container image, minus strata and helm themselves
# (the Dockerfile and scripts/check-image-layout.sh add those to /usr/local/bin):
#   - the git CLI that strata drives (git, the http/https remote helpers, upload-pack) and ssh
#     for ssh:// remotes, with every shared library they load (their ldd closure, including
#     the C library and the dynamic loader), copied from the system this script runs on;
#   - the CA bundle (/etc/ssl/certs/ca-certificates.crt), a minimal /etc/passwd and /etc/group
#     with the non-root user 65532 ("nonroot", HOME /tmp) and /etc/nsswitch.conf;
#   - an empty /tmp (mode 1777; in Kubernetes an emptyDir is mounted over it).
# No shell, no package manager. The Dockerfile runs it in a Debian stage and copies DEST into a
# `scratch` image; scripts/check-image-layout.sh runs it on the host and runs strata inside
# DEST (chroot, uid 65532, read-only, only /tmp writable), so the same layout is checked here.
#
# Usage: scripts/image-rootfs.sh DEST [ELF...]
#   DEST must not exist or be empty; run as root so ownership and modes are kept.
#   ELF...: further dynamically linked programs whose libraries to include (not the programs
#   themselves); the image needs none (strata is static musl, helm is static Go).
set -euo pipefail
umask 022

if [ $# -lt 1 ]; then
  echo "usage: $0 DEST [ELF...]" >&2
  exit 2
fi
dest=$1
shift
extra=("$@")
mkdir -p "$dest"
if [ -n "$(ls -A "$dest")" ]; then
  echo "image-rootfs: $dest is not empty" >&2
  exit 1
fi
dest=$(cd "$dest" && pwd)

git_bin=$(command -v git) || {
  echo "image-rootfs: git not found on PATH" >&2
  exit 1
}
git_bin=$(readlink -f "$git_bin")
exec_path=$(git --exec-path)

# Merged-/usr systems have /bin, /lib, ... as symlinks into /usr: mirror them so the paths the
# binaries were linked with (the ELF interpreter /lib64/ld-linux-x86-64.so.2) resolve in DEST.
for top in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$top" ]; then
    ln -s "$(readlink "/$top")" "$dest/$top"
    mkdir -p "$dest$(readlink -f "/$top")"
  fi
done

# copy PATH: copies PATH into DEST at the same place, keeping symlinks (and their targets).
copy() {
  local path=$1
  if [ -e "$dest$path" ] || [ -L "$dest$path" ]; then
    return 0
  fi
  mkdir -p "$dest$(dirname "$path")"
  cp -a "$path" "$dest$path"
  if [ -L "$path" ]; then
    copy "$(readlink -f "$path")"
  fi
}

# libs ELF: copies the shared libraries ELF loads (its ldd closure).
libs() {
  local line lib
  while read -r line; do
    case $line in
      *"not found"*)
        echo "image-rootfs: $1 needs a missing library: $line" >&2
        exit 1
        ;;
      *"=> /"*) lib=${line#*=> } ;;
      /*) lib=$line ;;
      *) continue ;;
    esac
    copy "${lib%% (*}"
  done < <(ldd "$1" 2>/dev/null || true)
}

elves=("$git_bin")
copy "$git_bin"

# The exec-path programs strata's fetches use. Those that are git itself (hard links of the
# same file) become symlinks to git: git dispatches on the name it is run as.
mkdir -p "$dest$exec_path"
for helper in git git-remote-http git-remote-https git-upload-pack; do
  src=$exec_path/$helper
  [ -e "$src" ] || continue
  if [ "$src" -ef "$git_bin" ]; then
    ln -sf "$git_bin" "$dest$src"
  else
    copy "$(readlink -f "$src")"
    [ -L "$src" ] && copy "$src"
    elves+=("$(readlink -f "$src")")
  fi
done
# /usr/bin/git on PATH even when git lives elsewhere (e.g. /usr/local/bin/git).
if [ "$git_bin" != /usr/bin/git ]; then
  mkdir -p "$dest/usr/bin"
  ln -s "$git_bin" "$dest/usr/bin/git"
fi
# git init copies its templates; without them it only warns, so they are optional.
templates=$(dirname "$(dirname "$exec_path")")/share/git-core/templates
if [ -d "$templates" ]; then
  copy "$templates"
fi

if ssh_bin=$(command -v ssh); then
  copy "$(readlink -f "$ssh_bin")"
  elves+=("$(readlink -f "$ssh_bin")")
else
  echo "image-rootfs: warning: ssh not found, ssh:// remotes will not work" >&2
fi

for elf in "${elves[@]}" "${extra[@]}"; do
  libs "$elf"
done

ca=/etc/ssl/certs/ca-certificates.crt
if [ ! -f "$ca" ]; then
  echo "image-rootfs: $ca missing (install ca-certificates)" >&2
  exit 1
fi
mkdir -p "$dest/etc/ssl/certs"
cp -L "$ca" "$dest$ca"

cat >"$dest/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin
EOF
cat >"$dest/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
cat >"$dest/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/nsswitch.conf"
mkdir -p "$dest/tmp" "$dest/usr/local/bin" "$dest/etc/strata"
chmod 1777 "$dest/tmp"

echo "image-rootfs: $dest: git $("$git_bin" --version | cut -d' ' -f3), $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1)"

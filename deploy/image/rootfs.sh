#!/bin/sh
# Assembles the image's root filesystem in DEST from the given binaries: each into
# /usr/local/bin, OpenSSH's client tools (ssh, ssh-agent, ssh-add) from this machine, every
# shared library they load (found with ldd, the dynamic loader included; static binaries need
# none), the CA bundle, /etc/passwd and /etc/group naming 65532 "nonroot" (home /tmp), and /tmp.
# Used by deploy/Dockerfile (Alpine) and by the tests (on the test machine).
#
#   sh deploy/image/rootfs.sh DEST BINARY...
set -eu
dest=$1
shift
mkdir -p "$dest/usr/local/bin" "$dest/usr/bin" "$dest/etc/ssl/certs" "$dest/tmp"
chmod 1777 "$dest/tmp"

copy_libs() {
    # ldd prints "name => /path (addr)" or "/path (addr)"; a static binary prints no path.
    ldd "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
        while read -r lib; do
            [ -f "$lib" ] || continue
            mkdir -p "$dest$(dirname "$lib")"
            cp -L "$lib" "$dest$lib"
        done
}

for bin in "$@"; do
    cp "$bin" "$dest/usr/local/bin/"
    copy_libs "$bin"
done
for tool in ssh ssh-agent ssh-add; do
    path=$(command -v "$tool") || { echo "rootfs.sh: $tool not found (install OpenSSH's client)" >&2; exit 1; }
    cp "$path" "$dest/usr/bin/$tool"
    copy_libs "$path"
done
# glibc loads its passwd lookup module at run time (ldd does not list it); musl has none.
for nss in /lib/*/libnss_files.so.2 /usr/lib/*/libnss_files.so.2 /lib64/libnss_files.so.2; do
    [ -f "$nss" ] || continue
    mkdir -p "$dest$(dirname "$nss")"
    cp -L "$nss" "$dest$nss"
done
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$dest/etc/nsswitch.conf"
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/ssl/cert.pem; do
    if [ -f "$bundle" ]; then
        cp -L "$bundle" "$dest/etc/ssl/certs/ca-certificates.crt"
        break
    fi
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$dest/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$dest/etc/group"

#!/bin/sh
# Build orch's example OCI images from the host's busybox-static into OCI layouts:
#
#   OUTDIR/busybox:latest   /bin/busybox with every applet linked in /bin
#                           (sh, httpd, wget, nslookup, sleep, cat, echo, hostname, ...),
#                           /etc/passwd, /etc/group, /tmp; Cmd ["sh"].
#
# Pull one with `skopeo copy oci:OUTDIR/busybox:latest ...` or give orch the reference
# oci:/abs/OUTDIR/busybox:latest. Needs umoci, tar and /bin/busybox (Debian busybox-static).
#
# Idempotent and fast: the layer tar is reproducible (sorted, mtime 0, numeric root
# ownership) and the image is rebuilt only when busybox or this script changed (a stamp
# file in the layout says which); a rebuild happens in a temp dir and is renamed in place.
set -eu

out=${1:?usage: build-images.sh OUTDIR}
busybox=${BUSYBOX:-/bin/busybox}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in umoci tar sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-images.sh: $tool not found" >&2; exit 1; }
done
[ -x "$busybox" ] || { echo "build-images.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }

stamp=$(cat "$busybox" "$0" | sha256sum | cut -d' ' -f1)
layout=$out/busybox
if [ -f "$layout/orch-stamp" ] && [ "$(cat "$layout/orch-stamp")" = "$stamp" ]; then
    exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/var/www" \
    "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
EOF
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"
echo busybox >"$rootfs/etc/hostname"

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$rootfs" -cf "$work/layer.tar" .

img=$work/busybox
umoci init --layout "$img"
umoci new --image "$img:latest"
umoci raw add-layer --image "$img:latest" --history.created 1970-01-01T00:00:00Z \
    --history.created_by "orch deploy/build-images.sh" "$work/layer.tar"
umoci config --no-history --image "$img:latest" \
    --created 1970-01-01T00:00:00Z --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd sh
umoci gc --layout "$img"
echo "$stamp" >"$img/orch-stamp"

rm -rf "$layout.old"
[ ! -e "$layout" ] || mv "$layout" "$layout.old"
mv "$img" "$layout"
rm -rf "$layout.old"

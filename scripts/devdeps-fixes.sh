#!/usr/bin/env bash
# On the GPU machine, after `source .devdeps/env.sh`: two fixes to the carried
# packages' pkg-config files, found there on 2026-11-27. stb.pc names prefix
# /usr, not where the package was unpacked; libzmq.pc's Requires.private
# names packages (krb5-gssapi, libsodium, ...) whose .pc files are not
# carried. Does nothing where /opt/devdeps is absent.
pc=/opt/devdeps/usr/lib/x86_64-linux-gnu/pkgconfig
if [[ -d $pc ]]; then
  if [[ -f $pc/stb.pc ]]; then sed -i 's|^prefix=/usr$|prefix=/opt/devdeps/usr|' "$pc/stb.pc"; fi
  sed -i '/^Requires.private/d' "$pc"/*.pc
fi
